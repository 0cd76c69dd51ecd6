import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSigner, httpbis } from 'http-message-signatures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack, tempDir } from './helpers.js';

const HMAC_KEY = 'webhook-secret-shared-with-the-sender-0123456789';

/** RFC 9421 HTTP Message Signatures on webhook routes: HMAC-SHA256 and Ed25519, digest, window, replay. */
describe('webhook routes signed with HTTP Message Signatures (RFC 9421)', () => {
  let s: Stack;
  let cleanup: () => void;
  const ed = generateKeyPairSync('ed25519');
  beforeAll(async () => {
    const t = tempDir();
    cleanup = t.cleanup;
    const pub = join(t.dir, 'partner.pem');
    writeFileSync(pub, ed.publicKey.export({ type: 'spki', format: 'pem' }));
    s = await startStack({
      messageSigners: {
        github: { alg: 'hmac-sha256', key: HMAC_KEY, roles: ['webhook'] },
        partner: { alg: 'ed25519', publicKeyFile: pub, roles: ['webhook'] },
        other: { alg: 'hmac-sha256', key: `${HMAC_KEY}-other`, roles: ['webhook'] },
      },
      routes: [
        {
          id: 'hooks',
          path: '/hooks/events',
          methods: ['POST'],
          upstream: 'app',
          signature: { signers: ['github', 'partner'], maxAge: '5m' },
        },
      ],
      policy: { rules: [{ id: 'webhooks', routes: ['hooks'], roles: ['webhook'] }] },
    });
  });
  afterAll(async () => {
    await s?.close();
    cleanup?.();
  });

  const digest = (body: string) => `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
  /** A request signed the way a sender would, with the same library. */
  const signed = async (
    body: string,
    opts: {
      key?: ReturnType<typeof createSigner>;
      path?: string;
      fields?: string[];
      created?: Date;
      nonce?: string;
      digestOf?: string;
    } = {},
  ) => {
    const url = `${s.pc.gatewayUrl}${opts.path ?? '/hooks/events'}`;
    const req = await httpbis.signMessage(
      {
        key: opts.key ?? createSigner(Buffer.from(HMAC_KEY), 'hmac-sha256', 'github'),
        fields: opts.fields ?? ['@method', '@target-uri', 'content-digest', 'content-type'],
        params: ['created', 'keyid', 'nonce', 'alg'],
        paramValues: { created: opts.created ?? new Date(), nonce: opts.nonce ?? randomUUID() },
      },
      {
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json', 'content-digest': digest(opts.digestOf ?? body) },
      },
    );
    return req.headers as Record<string, string>;
  };
  const send = (headers: Record<string, string>, body: string) =>
    fetch(`${s.pc.gatewayUrl}/hooks/events`, { method: 'POST', headers, body });
  const code = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code;

  it('accepts HMAC-SHA256 and Ed25519 signatures covering method, target and body digest; the body goes upstream', async () => {
    const body = '{"event":"push","ref":"main"}';
    const ok = await send(await signed(body), body);
    expect(ok.status).toBe(200);
    expect(s.upstream.received.at(-1)?.body).toBe(body);
    const assertion = JSON.parse(
      Buffer.from(
        String(s.upstream.received.at(-1)?.headers['x-portcullis-assertion']).split('.')[1] as string,
        'base64url',
      ).toString(),
    );
    expect(assertion.sub).toBe('signer:github');
    const viaEd = await send(
      await signed(body, { key: createSigner(ed.privateKey, 'ed25519', 'partner') }),
      body,
    );
    expect(viaEd.status).toBe(200);
  });

  it('refuses replays, tampered bodies, stale or future signatures, missing components, other keys and other targets', async () => {
    const body = '{"event":"push"}';
    const before = s.upstream.received.length;
    const headers = await signed(body);
    expect((await send(headers, body)).status).toBe(200);
    const replay = await send(headers, body);
    expect(replay.status).toBe(401);
    expect(await code(replay)).toBe('invalid_signature');
    // The body is not the one the digest (and so the signature) covers.
    expect((await send(await signed(body), '{"event":"delete-everything"}')).status).toBe(401);
    // A digest of another body, correctly signed: the digest check still catches it.
    expect((await send(await signed(body, { digestOf: 'something else' }), body)).status).toBe(401);
    expect(
      (await send(await signed(body, { created: new Date(Date.now() - 10 * 60_000) }), body)).status,
    ).toBe(401);
    expect(
      (await send(await signed(body, { created: new Date(Date.now() + 10 * 60_000) }), body)).status,
    ).toBe(401);
    expect((await send(await signed(body, { fields: ['@method', '@target-uri'] }), body)).status).toBe(401);
    const notAccepted = createSigner(Buffer.from(`${HMAC_KEY}-other`), 'hmac-sha256', 'other');
    expect((await send(await signed(body, { key: notAccepted }), body)).status).toBe(401);
    const forged = createSigner(Buffer.from('x'.repeat(48)), 'hmac-sha256', 'github');
    expect((await send(await signed(body, { key: forged }), body)).status).toBe(401);
    expect((await send(await signed(body, { path: '/hooks/other' }), body)).status).toBe(401);
    expect((await send(await signed(body, { nonce: 'short' }), body)).status).toBe(401);
    // Only one member of Content-Digest covered: not enough (another member could be swapped in).
    const partial = await signed(body, {
      fields: ['@method', '@target-uri', 'content-digest;key="sha-256"'],
    });
    expect(partial['Signature-Input']).toContain('"content-digest";key="sha-256"');
    expect((await send(partial, body)).status).toBe(401);
    const unsigned = await send({ 'content-type': 'application/json' }, body);
    expect(await code(unsigned)).toBe('unauthenticated');
    expect(s.upstream.received.length).toBe(before + 1);
  });
});

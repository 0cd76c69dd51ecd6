// Micro-benchmark: the cost of signing one identity assertion, by method (single thread, in-process).
//   node bench/micro/assertion-sign.mjs [--ms 1500]
// Compares jose's SignJWT (ES256), node:crypto ES256 with a cached KeyObject (what the gateway does by
// default), and HMAC-SHA256 with a per-upstream key (the gateway's HS256 option). Every signed form is
// checked once with jose's jwtVerify before timing, so the numbers are for valid tokens.
import { createHmac, createSecretKey, generateKeyPairSync, sign } from 'node:crypto';
import { parseArgs } from 'node:util';
import { jwtVerify, SignJWT } from 'jose';

const { values } = parseArgs({ options: { ms: { type: 'string', default: '1500' } } });
const budget = Number(values.ms);
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const secret = createSecretKey(Buffer.from('bench-only-shared-upstream-key-0123456789abcdef'));
const b64 = (s) => Buffer.from(s).toString('base64url');
const claims = () => ({
  iss: 'http://127.0.0.1:8080',
  aud: 'items',
  sub: 'user-single',
  iat: 1795458400,
  exp: 1795458430,
  jti: 'a8b1c2d3-1111-2222-3333-444455556666',
  roles: ['reader'],
  amr: [],
  htm: 'GET',
  host: '127.0.0.1',
  tgt: 'uVWeqe8RR0cm7NnNUR1TGam_-vPYk5XDY7OB8w61I00',
  route: 'items',
  rules: ['readers-read-items'],
});
const esHeader = b64(JSON.stringify({ alg: 'ES256', kid: 'k1', typ: 'portcullis-assertion+jwt' }));
const hsHeader = b64(JSON.stringify({ alg: 'HS256', typ: 'portcullis-assertion+jwt' }));
const keyOpt = { key: privateKey, dsaEncoding: 'ieee-p1363' };

const methods = {
  'jose SignJWT ES256': () =>
    new SignJWT(claims())
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'portcullis-assertion+jwt' })
      .sign(privateKey),
  'node:crypto ES256 (gateway default)': () => {
    const input = `${esHeader}.${b64(JSON.stringify(claims()))}`;
    return `${input}.${sign('sha256', Buffer.from(input), keyOpt).toString('base64url')}`;
  },
  'node:crypto HMAC-SHA256 (gateway HS256)': () => {
    const input = `${hsHeader}.${b64(JSON.stringify(claims()))}`;
    return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
  },
};

const opts = { currentDate: new Date(1795458410_000) };
await jwtVerify(await methods['jose SignJWT ES256'](), publicKey, opts);
await jwtVerify(methods['node:crypto ES256 (gateway default)'](), publicKey, opts);
await jwtVerify(methods['node:crypto HMAC-SHA256 (gateway HS256)'](), secret, opts);

const rows = [];
for (const [name, fn] of Object.entries(methods)) {
  for (let i = 0; i < 2000; i++) await fn(); // warm-up
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < budget) {
    for (let i = 0; i < 200; i++) await fn();
    n += 200;
  }
  const us = ((performance.now() - t0) * 1000) / n;
  rows.push([name, us]);
}
const base = rows[0][1];
console.log(`| method | µs per assertion | × jose |\n|---|---:|---:|`);
for (const [name, us] of rows) console.log(`| ${name} | ${us.toFixed(1)} | ${(base / us).toFixed(2)} |`);

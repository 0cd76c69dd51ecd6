import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, parseConfigText } from '../src/config/index.js';
import { tempDir } from './helpers.js';

const VALID = `identity:
  issuer: http://127.0.0.1:8080
upstreams:
  demo:
    url: http://127.0.0.1:8081
routes:
  - id: orders
    path: /api/orders
    upstream: demo
`;

function issuesOf(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('config loader', () => {
  let cleanup: (() => void) | undefined;
  afterEach(() => cleanup?.());

  it('loads the shipped example config', () => {
    const { config, dataDir } = loadConfigFile('portcullis.example.yaml');
    expect(config.gateway.listen.port).toBe(8080);
    expect(config.identity.accessTokenTtl).toBe(600_000);
    expect(config.routes.map((r) => r.id)).toContain('admin');
    expect(dataDir.endsWith('.portcullis')).toBe(true);
  });

  it('applies defaults and parses durations', () => {
    const { config } = parseConfigText(VALID, '/etc/p.yaml');
    expect(config.routes[0]?.methods).toEqual(['GET', 'HEAD']);
    expect(config.identity.sessionTtl).toBe(12 * 3600 * 1000);
    expect(config.audit.decisions).toBe('batched');
    expect(config.audit.identity).toBe('durable');
    expect(config.audit.failOpen).toEqual({ decisions: false, identity: false });
    expect(config.audit.sensitiveFields).toEqual(['ip', 'username']);
  });

  it('names an external issuer’s claim that policy could not read, or that is built into the principal', () => {
    const text = `${VALID}issuers:
  idp:
    issuer: https://idp.example.test/
    audience: api
    publicKeyFile: idp.pem
    claims: [tenant, roles, e-mail]
`;
    const err = issuesOf(() => parseConfigText(text, '/etc/portcullis.yaml'));
    expect(err.issues.map((i) => [i.line, i.path, i.message])).toEqual([
      [15, 'issuers.idp.claims[1]', 'built into principal: cannot be a claim attribute'],
      [15, 'issuers.idp.claims[2]', 'a claim name conditions can read (letters, digits, _)'],
    ]);
    const { config } = parseConfigText(text.replace(', roles, e-mail', ''), '/etc/portcullis.yaml');
    expect(config.issuers.idp).toMatchObject({
      claims: ['tenant'],
      groupsClaim: 'groups',
      rolesClaim: 'roles',
    });
  });

  it('rejects an unknown key with file:line:column and the config path', () => {
    const text = VALID.replace('    upstream: demo\n', '    upstream: demo\n    upstrem: typo\n');
    const err = issuesOf(() => parseConfigText(text, '/etc/portcullis.yaml'));
    expect(err.issues).toEqual([
      {
        file: '/etc/portcullis.yaml',
        line: 10,
        column: 5,
        path: 'routes[0].upstrem',
        message: 'unknown key "upstrem"',
      },
    ]);
    expect(err.message).toContain('/etc/portcullis.yaml:10:5: routes[0].upstrem: unknown key "upstrem"');
  });

  it('rejects a wrong type with the line of the offending value', () => {
    const text = VALID.replace(
      '    url: http://127.0.0.1:8081',
      '    url: http://127.0.0.1:8081\n    connections: "many"',
    );
    const err = issuesOf(() => parseConfigText(text, 'p.yaml'));
    expect(err.issues[0]).toMatchObject({ file: 'p.yaml', line: 6, path: 'upstreams.demo.connections' });
    expect(err.issues[0]?.message).toMatch(/expected number/);
  });

  it('reports every problem at once, each with its own line', () => {
    const text = `${VALID}    methods: [GET, FETCH]\nbogus: 1\n`;
    const err = issuesOf(() => parseConfigText(text, 'p.yaml'));
    const where = err.issues.map((i) => `${i.line}:${i.path}`);
    expect(where).toContain('10:routes[0].methods[1]');
    expect(where).toContain('11:bogus');
  });

  it('checks cross references (route → upstream, rule → route)', () => {
    const text = `${VALID.replace('upstream: demo', 'upstream: nope')}policy:\n  rules:\n    - id: r\n      routes: [missing]\n      roles: [x]\n`;
    const err = issuesOf(() => parseConfigText(text, 'p.yaml'));
    expect(err.issues.map((i) => [i.line, i.path, i.message])).toEqual([
      [9, 'routes[0].upstream', 'unknown upstream "nope"'],
      [13, 'policy.rules[0].routes[0]', 'unknown route "missing"'],
    ]);
  });

  it('rejects malformed YAML and duplicate keys with a position', () => {
    const err = issuesOf(() => parseConfigText('identity:\n  issuer: a\n  issuer: b\n', 'dup.yaml'));
    expect(err.issues[0]).toMatchObject({ file: 'dup.yaml', line: 3, path: '(yaml)' });
    const err2 = issuesOf(() => parseConfigText('routes: [\n', 'bad.yaml'));
    expect(err2.issues[0]?.file).toBe('bad.yaml');
  });

  it('resolves ${env:NAME} and ${file:PATH}, and names the line when one is missing', () => {
    const t = tempDir();
    cleanup = t.cleanup;
    writeFileSync(join(t.dir, 'issuer.txt'), 'https://from-file.example\n');
    const file = join(t.dir, 'p.yaml');
    writeFileSync(
      file,
      VALID.replace('http://127.0.0.1:8080', '${file:issuer.txt}').replace(
        'http://127.0.0.1:8081',
        '${env:UPSTREAM_URL}',
      ),
    );
    const { config } = loadConfigFile(file, { UPSTREAM_URL: 'http://10.0.0.9:9000' });
    expect(config.identity.issuer).toBe('https://from-file.example');
    expect(config.upstreams.demo?.url).toBe('http://10.0.0.9:9000');

    const err = issuesOf(() => loadConfigFile(file, {}));
    expect(err.issues).toEqual([
      {
        file,
        line: 5,
        column: 10,
        path: 'upstreams.demo.url',
        message: 'environment variable UPSTREAM_URL is not set',
      },
    ]);
  });

  it('names the file when it cannot be read', () => {
    const err = issuesOf(() => loadConfigFile('/nonexistent/portcullis.yaml'));
    expect(err.message).toContain('/nonexistent/portcullis.yaml');
  });

  it('refuses route patterns with dot segments and assertion lifetimes over 60s', () => {
    const err = issuesOf(() =>
      parseConfigText(`${VALID.replace('/api/orders', '/api/../admin')}assertion:\n  ttl: 5m\n`, 'p.yaml'),
    );
    expect(err.issues.map((i) => i.path)).toEqual(['routes[0].path', 'assertion.ttl']);
  });
});

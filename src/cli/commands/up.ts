import { loadConfigFile } from '../../config/index.js';
import { startPortcullis } from '../../portcullis.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse } from '../io.js';

/**
 * `portcullis up [--config FILE]`: starts the gateway, identity endpoints, admin listener and (when
 * configured) the demo upstream; prints what started where and how to log in; reloads the config on
 * SIGHUP; runs until SIGINT/SIGTERM (then drains: no new connections, in-flight requests finish).
 */
export const up: Command = async (argv, io: CliIO) => {
  const { values } = parse(argv, CONFIG_OPTION, false);
  const file = configPath(values.config, io);
  const loaded = loadConfigFile(file, io.env ?? process.env);
  const pc = await startPortcullis(loaded);
  const out = (s = '') => io.stdout.write(`${s}\n`);
  out();
  out('Portcullis is up.');
  out(
    `  gateway        ${pc.gatewayUrl}      (identity: POST /auth/login, /auth/refresh, /auth/logout; JWKS: /.well-known/jwks.json)`,
  );
  out(`  admin          ${pc.adminUrl}      (/healthz, /readyz, /metrics)`);
  if (pc.demoUrl)
    out(
      `  demo upstream  ${pc.demoUrl}      (behind the gateway: /api/orders, /api/orders/:id, /api/admin/reports, /api/whoami)`,
    );
  out(`  config         ${loaded.file}`);
  out(`  data           ${loaded.dataDir}  (SQLite database, signing keys)`);
  out(`  audit log key  ${pc.core.checkpointSigner.verifierKey}`);
  out('                 (C2SP verifier key of the signed audit checkpoints: give it to your auditors)');
  if (pc.seededUsers.length > 0) {
    out();
    out('Demo users (passwords are shown only this once):');
    for (const u of pc.seededUsers)
      out(`  ${u.username.padEnd(8)} ${u.password}   roles=[${u.roles.join(', ')}]`);
  } else {
    out();
    out('Add a user with: portcullis user add NAME --role viewer');
  }
  const user = pc.seededUsers.find((u) => u.roles.includes('viewer'));
  out();
  out('Try it:');
  out(
    `  TOKEN=$(curl -s ${pc.gatewayUrl}/auth/login -H 'content-type: application/json' -d '{"username":"${user?.username ?? 'viewer'}","password":"${user?.password ?? 'PASSWORD'}"}' | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')`,
  );
  out(`  curl -s ${pc.gatewayUrl}/api/orders -H "authorization: Bearer $TOKEN"`);
  out(
    `  curl -s ${pc.gatewayUrl}/api/admin/reports -H "authorization: Bearer $TOKEN"     # 403 for a viewer`,
  );
  out(`  portcullis audit verify --config ${file}`);
  out();

  // SIGHUP: re-read the config file and apply it without dropping connections; a bad file is reported
  // (file:line:path) and the running config stays.
  const onHup = () => {
    void (async () => {
      try {
        const result = await pc.reload(loadConfigFile(file, io.env ?? process.env));
        if (result.ok) {
          out(
            `config reloaded from ${file}${result.restartRequired.length > 0 ? ` (restart needed for: ${result.restartRequired.join(', ')})` : ''}`,
          );
        } else io.stderr.write(`config reload failed, still running the previous config: ${result.error}\n`);
      } catch (err) {
        io.stderr.write(
          `config reload failed, still running the previous config:\n${(err as Error).message}\n`,
        );
      }
    })();
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    if (io.signal?.aborted) return resolve();
    io.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  process.off('SIGHUP', onHup);
  await pc.close();
  out('Portcullis stopped.');
  return 0;
};

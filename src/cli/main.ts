import { ConfigError } from '../config/index.js';
import { agent } from './commands/agent.js';
import { apiKey } from './commands/api-key.js';
import { audit } from './commands/audit.js';
import { device } from './commands/device.js';
import { exportCommand } from './commands/export.js';
import { init } from './commands/init.js';
import { jwt } from './commands/jwt.js';
import { keys } from './commands/keys.js';
import { policy } from './commands/policy.js';
import { serviceAccount } from './commands/service-account.js';
import { up } from './commands/up.js';
import { user } from './commands/user.js';
import { ca, svid } from './commands/workload.js';
import { type CliIO, type Command, UsageError } from './io.js';

const COMMANDS: Readonly<Record<string, Command>> = {
  up,
  init,
  user,
  'service-account': serviceAccount,
  'api-key': apiKey,
  device,
  keys,
  ca,
  svid,
  agent,
  export: exportCommand,
  audit,
  jwt,
  policy,
};

const HELP = `portcullis — zero-trust access gateway

usage: portcullis <command> [options]

commands:
  up            start the gateway, identity, admin listener (and the demo upstream)
  init          write a starter portcullis.yaml and generate signing keys
  user          add | list | show | suspend | unlock | reset-mfa | sessions | revoke
  service-account  add | list | rotate-key (client credentials)
  api-key       create | list | revoke API keys (X-API-Key)
  device        list | show | approve | revoke enrolled devices
  audit         verify the hash-chained audit log
  jwt           verify a token against a JWKS
  keys          list | rotate the access-token signing keys
  ca            init the internal CA (workload identity)
  svid          issue | verify X.509-SVIDs
  agent         keep a workload's X.509-SVID fresh (files + local SDK socket)
  export        istio | k8s: the policy's service graph as mesh/cluster manifests
  policy        check | explain | test the access policy

options common to most commands: --config FILE (default: $PORTCULLIS_CONFIG or ./portcullis.yaml)
`;

/**
 * Runs one CLI command and returns its exit code: 0 ok, 1 failed, 2 usage error.
 *
 * @example
 * const code = await runCli(['audit', 'verify', '--config', 'portcullis.yaml'], { stdout: process.stdout, stderr: process.stderr });
 */
export async function runCli(argv: readonly string[], io: CliIO): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(HELP);
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.stderr.write(`unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  try {
    return await command(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof ConfigError) {
      io.stderr.write(`${err.message}\n`);
      return 1;
    }
    io.stderr.write(`portcullis ${name}: ${(err as Error).message}\n`);
    return 1;
  }
}

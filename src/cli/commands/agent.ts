import { readFileSync } from 'node:fs';
import { createLogger } from '../../core/index.js';
import { WorkloadAgent } from '../../workload/agent.js';
import { type CliIO, type Command, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis agent --workload-api URL --bundle BUNDLE.pem --spiffe-id ID --out DIR
                   [--join-token TOKEN | --join-token-file FILE] [--socket PATH]
      keeps this workload's X.509-SVID fresh: first issuance with the join token (not needed while a valid
      SVID is in DIR), renewal over mTLS at half-life with jitter, retries through a CA outage until
      expiry; writes DIR/svid.pem, DIR/svid.key, DIR/bundle.pem (0600); serves the SDK on --socket.
      Runs until SIGINT/SIGTERM; exits 1 if the SVID expires unrenewed.`;

/** `portcullis agent`: the workload-side companion of the workload API. */
export const agent: Command = async (argv, io: CliIO) => {
  const { values } = parse(
    argv,
    {
      'workload-api': { type: 'string' },
      bundle: { type: 'string' },
      'spiffe-id': { type: 'string' },
      out: { type: 'string' },
      'join-token': { type: 'string' },
      'join-token-file': { type: 'string' },
      socket: { type: 'string' },
    },
    false,
  );
  const api = values['workload-api'];
  const bundle = values.bundle;
  const spiffeId = values['spiffe-id'];
  const out = values.out;
  if (!api || !bundle || !spiffeId || !out) throw new UsageError(USAGE);
  const joinToken =
    values['join-token'] ??
    (values['join-token-file'] ? readFileSync(values['join-token-file'], 'utf8').trim() : undefined);
  let expired = false;
  let wake: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const a = new WorkloadAgent({
    workloadApi: api,
    bundlePem: readFileSync(bundle, 'utf8'),
    spiffeId,
    joinToken,
    outDir: out,
    socketPath: values.socket,
    log: createLogger({ level: io.env?.PORTCULLIS_LOG_LEVEL === 'silent' ? 'silent' : 'info' }),
    onExpired: () => {
      expired = true;
      wake();
    },
  });
  try {
    const svid = await a.start();
    io.stdout.write(`agent: ${svid.spiffeId} until ${svid.notAfter.toISOString()}, files in ${out}\n`);
  } catch (err) {
    io.stderr.write(`agent: ${(err as Error).message}\n`);
    return 1;
  }
  io.signal?.addEventListener('abort', () => wake(), { once: true });
  await done;
  await a.stop();
  return expired ? 1 : 0;
};

import type { AuditRecord, Store } from '../../store/index.js';

/** Opens the store of the config named by `--config` for the duration of `fn`. */
export type WithStore = (
  config: string | undefined,
  fn: (store: Store) => Promise<number>,
) => Promise<number>;

import { type CliIO, parse, UsageError } from '../io.js';

/** `key=value` filters: `type` matches the record type, anything else a (dotted) field of its data. */
export function recordFilter(filters: readonly string[]): (r: AuditRecord) => boolean {
  const tests = filters.map((f) => {
    const eq = f.indexOf('=');
    if (eq < 1) throw new UsageError(`--filter takes key=value, got "${f}"`);
    const key = f.slice(0, eq);
    const want = f.slice(eq + 1);
    return (r: AuditRecord) => {
      if (key === 'type')
        return r.type === want || (want.endsWith('*') && r.type.startsWith(want.slice(0, -1)));
      let v: unknown = JSON.parse(r.data);
      for (const part of key.split('.'))
        v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[part] : undefined;
      return v !== undefined && v !== null && String(v) === want;
    };
  });
  return (r) => tests.every((t) => t(r));
}

/** One record as a JSON line: seq, ISO time, type, data. */
export const jsonLine = (r: AuditRecord) =>
  `${JSON.stringify({ seq: r.seq, time: new Date(r.ts).toISOString(), type: r.type, data: JSON.parse(r.data) })}\n`;

/** `--since`: an RFC 3339 time, or a record number. */
function parseSince(v: string | undefined): { seq: number; ts: number } {
  if (v === undefined) return { seq: 1, ts: Number.NEGATIVE_INFINITY };
  if (/^\d+$/.test(v)) return { seq: Number(v), ts: Number.NEGATIVE_INFINITY };
  const ts = Date.parse(v);
  if (Number.isNaN(ts)) throw new UsageError(`--since takes an RFC 3339 time or a record number, got "${v}"`);
  return { seq: 1, ts };
}

/**
 * `portcullis audit tail [-n N] [--follow] [--filter key=value ...]`: the newest records as JSON lines;
 * with --follow, keeps printing new ones until interrupted.
 */
export async function tail(argv: readonly string[], io: CliIO, withStore: WithStore): Promise<number> {
  const { values } = parse(
    argv,
    {
      config: { type: 'string', short: 'c' },
      lines: { type: 'string', short: 'n', default: '20' },
      follow: { type: 'boolean', short: 'f' },
      filter: { type: 'string', multiple: true },
      'poll-ms': { type: 'string', default: '500' },
    },
    false,
  );
  const n = Number(values.lines);
  if (!Number.isSafeInteger(n) || n < 0) throw new UsageError('-n takes a number');
  const keep = recordFilter(values.filter ?? []);
  return withStore(values.config, async (store) => {
    const last: AuditRecord[] = [];
    let next = 1;
    for await (const r of store.audit.scan()) {
      next = r.seq + 1;
      if (!keep(r)) continue;
      last.push(r);
      if (last.length > n) last.shift();
    }
    for (const r of last) io.stdout.write(jsonLine(r));
    if (!values.follow) return 0;
    const pollMs = Math.max(20, Number(values['poll-ms']));
    while (!io.signal?.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pollMs);
        io.signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
      });
      for await (const r of store.audit.scan(next)) {
        next = r.seq + 1;
        if (keep(r)) io.stdout.write(jsonLine(r));
      }
    }
    return 0;
  });
}

/**
 * `portcullis audit export [--since TIME|SEQ] [--until TIME] [--filter key=value ...] --format jsonl`:
 * records as JSON lines on stdout (for a SIEM, or to archive).
 */
export async function exportRecords(
  argv: readonly string[],
  io: CliIO,
  withStore: WithStore,
): Promise<number> {
  const { values } = parse(
    argv,
    {
      config: { type: 'string', short: 'c' },
      since: { type: 'string' },
      until: { type: 'string' },
      filter: { type: 'string', multiple: true },
      format: { type: 'string', default: 'jsonl' },
    },
    false,
  );
  if (values.format !== 'jsonl') throw new UsageError('--format: only jsonl is supported');
  const since = parseSince(values.since);
  const until = values.until === undefined ? Number.POSITIVE_INFINITY : Date.parse(values.until);
  if (Number.isNaN(until)) throw new UsageError(`--until takes an RFC 3339 time, got "${values.until}"`);
  const keep = recordFilter(values.filter ?? []);
  return withStore(values.config, async (store) => {
    let count = 0;
    for await (const r of store.audit.scan(since.seq)) {
      if (r.ts < since.ts || r.ts >= until || !keep(r)) continue;
      io.stdout.write(jsonLine(r));
      count += 1;
    }
    io.stderr.write(`exported ${count} records\n`);
    return 0;
  });
}

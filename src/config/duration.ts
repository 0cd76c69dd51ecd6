import { z } from 'zod';

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Parses `250ms`, `30s`, `10m`, `12h`, `7d` (or a bare number of seconds) to milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value * 1000 : undefined;
  const m = /^(\d{1,9})(ms|s|m|h|d)$/.exec(value);
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  return ms > 0 ? ms : undefined;
}

/** A zod schema for a positive duration; the parsed value is in milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a positive duration such as 30s, 10m or 12h, got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return ms;
});

/** Like {@link duration}, also accepting `0` (or `0s`) to turn a window off. */
export const durationOrOff = z.union([z.string(), z.number()]).transform((v, ctx) => {
  if (v === 0 || v === '0' || v === '0s' || v === '0ms') return 0;
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `expected a duration such as 5s, or 0 for none, got ${JSON.stringify(v)}`,
    });
    return z.NEVER;
  }
  return ms;
});

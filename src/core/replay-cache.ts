/** What a replay cache says about a one-time value. */
export type ReplayVerdict = 'fresh' | 'replay' | 'subject_full' | 'full';

/**
 * One-time values (DPoP `jti`s, webhook nonces) remembered until no message carrying them could still
 * be accepted. Fail closed: when full of live entries it refuses rather than forgets, and each subject
 * (a caller, a signer) may hold at most `maxPerSubject`, so one cannot lock out the others. Expired
 * entries are swept from the front as new ones arrive (amortised), and in full before any refusal
 * (expiries are not always in insertion order).
 */
export class ReplayCache {
  readonly #seen = new Map<string, { until: number; subject: string }>();
  readonly #perSubject = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly maxPerSubject: number,
  ) {}

  /** Records `key` for `subject` until `until` (ms) unless it is a replay or there is no room. */
  use(key: string, subject: string, until: number, now: number): ReplayVerdict {
    const prev = this.#seen.get(key);
    if (prev !== undefined && prev.until > now) return 'replay';
    if (prev !== undefined) this.#forget(key, prev.subject);
    this.#sweep(now, true);
    const full = () =>
      (this.#perSubject.get(subject) ?? 0) >= this.maxPerSubject || this.#seen.size >= this.max;
    if (full()) this.#sweep(now, false);
    if ((this.#perSubject.get(subject) ?? 0) >= this.maxPerSubject) return 'subject_full';
    if (this.#seen.size >= this.max) return 'full';
    this.#seen.set(key, { until, subject });
    this.#perSubject.set(subject, (this.#perSubject.get(subject) ?? 0) + 1);
    return 'fresh';
  }

  #sweep(now: number, frontOnly: boolean): void {
    for (const [k, e] of this.#seen) {
      if (e.until > now) {
        if (frontOnly) break;
        continue;
      }
      this.#forget(k, e.subject);
    }
  }

  #forget(key: string, subject: string): void {
    this.#seen.delete(key);
    const n = (this.#perSubject.get(subject) ?? 1) - 1;
    if (n <= 0) this.#perSubject.delete(subject);
    else this.#perSubject.set(subject, n);
  }
}

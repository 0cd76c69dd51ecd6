/** Settings of the login throttle (see {@link LoginThrottle}). */
export interface ThrottleOptions {
  /** Failures allowed before back-off starts (per account). */
  freeAttempts: number;
  /** First back-off delay; each further failure doubles it, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Failures (per account) that lock it for `lockMs`. */
  lockAfter: number;
  lockMs: number;
  /** Failures allowed per client address before its own back-off starts. */
  ipFreeAttempts: number;
  /** A counter is forgotten this long after its last failure. */
  forgetAfterMs: number;
}

interface Counter {
  failures: number;
  /** Attempts being checked right now (argon2 runs off-thread): they count until they are decided. */
  pending: number;
  last: number;
  /** For keys without a stored account (unknown users): the lock lives here. */
  lockedUntil: number;
}

const MAX_KEYS = 100_000;

/**
 * Brute-force defence for logins and MFA codes, in memory (one replica; Redis for several is on the
 * roadmap). Failures are counted per canonical account and per client address; past the free
 * attempts each failure doubles the wait before the next attempt, and `lockAfter` failures lock the
 * account for `lockMs` — a lock that expires by itself, so an attacker can delay a user but never
 * lock them out for good. Unknown accounts are counted and locked the same way (in memory), so the
 * answers do not tell which accounts exist.
 */
export class LoginThrottle {
  readonly #o: ThrottleOptions;
  readonly #accounts = new Map<string, Counter>();
  readonly #ips = new Map<string, Counter>();

  constructor(options: ThrottleOptions) {
    this.#o = options;
  }

  /**
   * Reserves an attempt: 0 = go ahead (call {@link settle} when it is decided), or the milliseconds to
   * wait. Attempts in flight count as failures until settled, so a burst of concurrent guesses cannot all
   * pass the gate while the first ones are still being hashed.
   */
  acquire(accountKey: string, ip: string, now: number): number {
    const wait = this.retryAfter(accountKey, ip, now);
    if (wait > 0) return wait;
    this.#counter(this.#accounts, accountKey, now).pending++;
    this.#counter(this.#ips, ip, now).pending++;
    return 0;
  }

  /** Ends a reservation made by {@link acquire} (after counting its failure, if it failed). */
  settle(accountKey: string, ip: string): void {
    for (const [map, key] of [
      [this.#accounts, accountKey],
      [this.#ips, ip],
    ] as const) {
      const c = map.get(key);
      if (c && c.pending > 0) c.pending--;
    }
  }

  /** Milliseconds to wait before this account (or address) may try again; 0 = go ahead. */
  retryAfter(accountKey: string, ip: string, now: number): number {
    const a = this.#get(this.#accounts, accountKey, now);
    const i = this.#get(this.#ips, ip, now);
    return Math.max(
      a ? Math.max(a.lockedUntil - now, this.#wait(a, this.#o.freeAttempts, now)) : 0,
      i ? this.#wait(i, this.#o.ipFreeAttempts, now) : 0,
      0,
    );
  }

  /**
   * Counts a failure. Returns the account's failure count and, when this failure reached `lockAfter`,
   * the time the lock ends (the caller stores it on the account and audits it).
   */
  fail(accountKey: string, ip: string, now: number): { failures: number; lockUntil: number | undefined } {
    const a = this.#bump(this.#accounts, accountKey, now);
    this.#bump(this.#ips, ip, now);
    let lockUntil: number | undefined;
    if (a.failures >= this.#o.lockAfter) {
      lockUntil = now + this.#o.lockMs;
      a.lockedUntil = lockUntil;
      a.failures = 0; // after the lock, back to a clean (but watched) slate
    }
    return { failures: a.failures, lockUntil };
  }

  /** A success forgets the account's failures (the address's stay: it may be guessing many accounts). */
  succeed(accountKey: string): void {
    const c = this.#accounts.get(accountKey);
    if (!c) return;
    // Keep the reservations of other attempts still in flight.
    if (c.pending > 0) {
      c.failures = 0;
      c.lockedUntil = 0;
    } else this.#accounts.delete(accountKey);
  }

  /** Forgets an account's failures and lock (administrator unlock). */
  reset(accountKey: string): void {
    this.#accounts.delete(accountKey);
  }

  #wait(c: Counter, free: number, now: number): number {
    const n = c.failures + c.pending;
    if (n <= free) return 0;
    const delay = Math.min(this.#o.maxDelayMs, this.#o.baseDelayMs * 2 ** (n - free - 1));
    return Math.max(0, c.last + delay - now);
  }

  #get(map: Map<string, Counter>, key: string, now: number): Counter | undefined {
    const c = map.get(key);
    if (c && now - c.last > this.#o.forgetAfterMs && c.lockedUntil <= now && c.pending === 0) {
      map.delete(key);
      return undefined;
    }
    return c;
  }

  #counter(map: Map<string, Counter>, key: string, now: number): Counter {
    let c = this.#get(map, key, now);
    if (!c) {
      if (map.size >= MAX_KEYS) {
        const oldest = map.keys().next();
        if (!oldest.done) map.delete(oldest.value);
      }
      c = { failures: 0, pending: 0, last: now, lockedUntil: 0 };
      map.set(key, c);
    }
    return c;
  }

  #bump(map: Map<string, Counter>, key: string, now: number): Counter {
    const c = this.#counter(map, key, now);
    c.failures++;
    c.last = now;
    return c;
  }
}

/**
 * Events per key in a sliding one-minute window, in 60 one-second buckets (bounded memory: the oldest
 * keys are dropped past `maxKeys`).
 */
export class SlidingCounter {
  readonly #buckets = new Map<string, { counts: Uint16Array; stamps: Float64Array }>();
  readonly #maxKeys: number;

  constructor(maxKeys = 100_000) {
    this.#maxKeys = maxKeys;
  }

  /** Counts one event now; returns the events of the last 60 s (this one included). */
  hit(key: string, now: number): number {
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.#maxKeys)
        this.#buckets.delete(this.#buckets.keys().next().value as string);
      b = { counts: new Uint16Array(60), stamps: new Float64Array(60) };
      this.#buckets.set(key, b);
    }
    const sec = Math.floor(now / 1000);
    const i = sec % 60;
    if (b.stamps[i] !== sec) {
      b.stamps[i] = sec;
      b.counts[i] = 0;
    }
    if ((b.counts[i] as number) < 65_535) b.counts[i] = (b.counts[i] as number) + 1;
    return this.count(key, now);
  }

  count(key: string, now: number): number {
    const b = this.#buckets.get(key);
    if (!b) return 0;
    const sec = Math.floor(now / 1000);
    let n = 0;
    for (let i = 0; i < 60; i++) if (sec - (b.stamps[i] as number) < 60) n += b.counts[i] as number;
    return n;
  }
}

import { readFile } from 'node:fs/promises';
import type { Logger } from '../core/index.js';
import { PrefixSet } from './trie.js';

export interface ThreatListSource {
  name: string;
  /** A local file, or an http(s) URL. */
  source: string;
  /** `plain` / `netset` (FireHOL): an address or CIDR per line, `#` comments; `tor`: the Tor exit list (`ExitAddress a.b.c.d …` lines, or plain addresses). */
  format: 'plain' | 'netset' | 'tor';
}

/** Parses one list into a prefix set; returns it and how many lines were not addresses. */
export function parseThreatList(
  text: string,
  format: ThreatListSource['format'],
): { set: PrefixSet; rejected: number } {
  const set = new PrefixSet();
  let rejected = 0;
  for (const raw of text.split('\n')) {
    let line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (format === 'tor') {
      if (/^(ExitNode|Published|LastStatus)\b/.test(line)) continue;
      const m = /^ExitAddress\s+(\S+)/.exec(line);
      if (m) line = m[1] as string;
    }
    if (!set.add(line.split(/\s+/)[0] as string)) rejected++;
  }
  return { set, rejected };
}

/**
 * Threat-intelligence lists (bad IPs and networks), each reloaded on a schedule and swapped whole; a
 * list that fails to load keeps its previous contents. `match(ip)` names every list that holds it, in
 * O(prefix length) per list.
 */
export class ThreatIntel {
  readonly #sources: readonly ThreatListSource[];
  readonly #log: Logger;
  #lists = new Map<string, PrefixSet>();
  #timer: NodeJS.Timeout | undefined;

  constructor(sources: readonly ThreatListSource[], log: Logger) {
    this.#sources = sources;
    this.#log = log;
  }

  get sizes(): Record<string, number> {
    return Object.fromEntries([...this.#lists].map(([n, s]) => [n, s.size]));
  }

  /** Loads every list now. */
  async reload(): Promise<void> {
    for (const src of this.#sources) {
      try {
        const text = /^https?:\/\//.test(src.source)
          ? await (async () => {
              const res = await fetch(src.source, { signal: AbortSignal.timeout(10_000) });
              if (!res.ok) throw new Error(`HTTP ${res.status}`);
              return res.text();
            })()
          : await readFile(src.source, 'utf8');
        const { set, rejected } = parseThreatList(text, src.format);
        const next = new Map(this.#lists);
        next.set(src.name, set);
        this.#lists = next; // swapped whole: a lookup never sees half a list
        this.#log.info({ list: src.name, networks: set.size, rejected }, 'threat list loaded');
      } catch (err) {
        this.#log.warn(
          { list: src.name, err: (err as Error).message },
          'threat list not reloaded; the previous one stays',
        );
      }
    }
  }

  /** Reloads every `intervalMs` (unref'd). */
  schedule(intervalMs: number): void {
    this.stop();
    this.#timer = setInterval(() => void this.reload(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  match(ip: string): string[] {
    let hits: string[] | undefined;
    for (const [name, set] of this.#lists) {
      if (!set.has(ip)) continue;
      hits = hits ?? [];
      hits.push(name);
    }
    return hits ?? NONE;
  }
}

const NONE: string[] = [];

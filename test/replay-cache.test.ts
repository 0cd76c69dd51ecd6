import { describe, expect, it } from 'vitest';
import { ReplayCache } from '../src/core/index.js';

/** The one-time-value cache behind DPoP jtis and webhook nonces. */
describe('ReplayCache', () => {
  it('accepts a value once while it lives, again after it expired', () => {
    const c = new ReplayCache(10, 10);
    expect(c.use('a', 's', 100, 0)).toBe('fresh');
    expect(c.use('a', 's', 100, 50)).toBe('replay');
    expect(c.use('a', 's', 300, 100)).toBe('fresh');
    expect(c.use('a', 's', 300, 200)).toBe('replay');
  });

  it("refuses rather than forgets when full; one subject cannot take everyone's room", () => {
    const c = new ReplayCache(4, 2);
    expect(c.use('a1', 'a', 1000, 0)).toBe('fresh');
    expect(c.use('a2', 'a', 1000, 0)).toBe('fresh');
    expect(c.use('a3', 'a', 1000, 0)).toBe('subject_full');
    expect(c.use('b1', 'b', 1000, 0)).toBe('fresh');
    expect(c.use('c1', 'c', 1000, 0)).toBe('fresh');
    expect(c.use('d1', 'd', 1000, 0)).toBe('full');
    expect(c.use('a1', 'a', 1000, 10)).toBe('replay');
  });

  it('sweeps expired entries even when they expire out of insertion order', () => {
    const c = new ReplayCache(2, 2);
    expect(c.use('long', 's', 1000, 0)).toBe('fresh');
    expect(c.use('short', 's', 10, 0)).toBe('fresh');
    // Full of the subject's entries, but "short" (behind "long") has expired: room is found.
    expect(c.use('next', 's', 1000, 20)).toBe('fresh');
    expect(c.use('long', 's', 1000, 30)).toBe('replay');
  });
});

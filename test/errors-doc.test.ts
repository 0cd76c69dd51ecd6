import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/core/index.js';

describe('docs/errors.md', () => {
  const doc = readFileSync('docs/errors.md', 'utf8');
  it.each(Object.entries(ERROR_CODES))('documents %s with its status', (code, spec) => {
    expect(doc).toMatch(new RegExp(`\\| \`${code}\` +\\| ${spec.status} +\\|`));
  });
  it('documents no code that does not exist', () => {
    const documented = [...doc.matchAll(/^\| `([a-z_]+)` +\|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });
});

/** One problem found in a config file, located as precisely as the YAML allows. */
export interface ConfigIssue {
  file: string;
  line: number;
  column: number;
  /** Dotted config path, e.g. `routes[2].upstream`. */
  path: string;
  message: string;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(root)' : out;
}

/**
 * A config that failed to load. The message lists every issue as `file:line:column: path: message`,
 * so an operator can jump straight to it.
 */
export class ConfigError extends Error {
  readonly code = 'config_invalid';
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(
      `invalid configuration:\n${issues.map((i) => `  ${i.file}:${i.line}:${i.column}: ${i.path}: ${i.message}`).join('\n')}`,
    );
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue, formatPath } from './errors.js';
import { type Config, type ConfigInput, configSchema } from './schema.js';

/** Where a value of a loaded YAML document is: file, line and column (1-based). */
export interface SourceLocation {
  file: string;
  line: number;
  column: number;
}
/** Finds a config path (`['policy', 'rules', 2, 'when']`) in the file it came from. */
export type Locate = (path: readonly (string | number)[]) => SourceLocation;

/** A loaded config plus where it came from: relative paths in it are resolved against `baseDir`. */
export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file, or `undefined` for a config given as an object. */
  file: string | undefined;
  /** Absolute data directory (config `dataDir` resolved against the config file's folder). */
  dataDir: string;
  /** Where a config path is in the file (line 0 for a config given as an object). */
  locate?: Locate;
}

const REF = /\$\{(env|file):([^}]+)\}/g;

/**
 * Loads and validates a YAML config file. Unknown keys and wrong types are rejected; every error
 * names the file, line, column and config path. `${env:NAME}` and `${file:PATH}` in string values are
 * replaced by an environment variable or a file's content (trailing newline removed).
 *
 * @example
 * const { config, dataDir } = loadConfigFile('portcullis.yaml');
 */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new ConfigError([
      { file: abs, line: 0, column: 0, path: '(file)', message: `cannot read: ${(err as Error).message}` },
    ]);
  }
  return parseConfigText(text, abs, env);
}

/** Like {@link loadConfigFile} for YAML text already in memory; `file` is used in messages and for relative paths. */
export function parseConfigText(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): LoadedConfig {
  const { data, locate } = parseYamlDocument(text, file, configSchema, env);
  return { config: data, file, dataDir: resolve(dirname(file), data.dataDir), locate };
}

/**
 * Parses and validates one YAML document against `schema`, with the same error reporting as the
 * config (file:line:column for YAML errors, unknown keys and wrong values) and `${env:}`/`${file:}`
 * references. Returns the data and a locator for its paths.
 */
export function parseYamlDocument<S extends z.ZodType>(
  text: string,
  file: string,
  schema: S,
  env: NodeJS.ProcessEnv = process.env,
): { data: z.output<S>; locate: Locate } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined): { line: number; column: number } => {
    if (offset === undefined) return { line: 1, column: 1 };
    const p = lc.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({
        file,
        ...at(e.pos[0]),
        path: '(yaml)',
        message: e.message.split('\n')[0] ?? e.message,
      })),
    );
  }

  // ${env:...} / ${file:...} references, resolved in place so later errors still point at the right line.
  const baseDir = dirname(file);
  const refIssues: ConfigIssue[] = [];
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = node.value.replace(REF, (_m, kind: string, arg: string) => {
        const name = arg.trim();
        if (kind === 'env') {
          const v = env[name];
          if (v === undefined) {
            refIssues.push({
              file,
              ...at(node.range?.[0]),
              path: pathOf(path, node),
              message: `environment variable ${name} is not set`,
            });
            return '';
          }
          return v;
        }
        try {
          return readFileSync(isAbsolute(name) ? name : resolve(baseDir, name), 'utf8').replace(/\r?\n$/, '');
        } catch (err) {
          refIssues.push({
            file,
            ...at(node.range?.[0]),
            path: pathOf(path, node),
            message: `cannot read ${name}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
          });
          return '';
        }
      });
    },
  });
  if (refIssues.length > 0) throw new ConfigError(refIssues);

  const raw: unknown = doc.toJS() ?? {};
  const result = schema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues.flatMap((issue): ConfigIssue[] => {
      const path = issue.path as (string | number)[];
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((k) => {
          const node = keyNode(doc.contents, path, k);
          return {
            file,
            ...at(node?.range?.[0]),
            path: formatPath([...path, k]),
            message: `unknown key "${k}"`,
          };
        });
      }
      const node = nearestNode(doc.contents, path);
      return [{ file, ...at(node?.range?.[0]), path: formatPath(path), message: issue.message }];
    });
    throw new ConfigError(issues.sort((a, b) => a.line - b.line || a.column - b.column));
  }
  const locate: Locate = (path) => ({ file, ...at(nearestNode(doc.contents, path)?.range?.[0]) });
  return { data: result.data, locate };
}

/**
 * Validates a config given as a plain object (library use). Errors carry the config path; the line is 0.
 *
 * @example
 * const { config } = defineConfig({ identity: { issuer: 'http://127.0.0.1:8080' }, upstreams: {...}, routes: [...] });
 */
export function defineConfig(input: ConfigInput, baseDir = process.cwd()): LoadedConfig {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => ({
        file: '(object)',
        line: 0,
        column: 0,
        path: formatPath(issue.code === 'unrecognized_keys' ? [...issue.path, ...issue.keys] : issue.path),
        message:
          issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.join(', ')}` : issue.message,
      })),
    );
  }
  return {
    config: result.data,
    file: undefined,
    dataDir: resolve(baseDir, result.data.dataDir),
    locate: () => ({ file: '(object)', line: 0, column: 0 }),
  };
}

function child(node: unknown, key: string | number): unknown {
  if (isMap(node)) return node.items.find((p) => isScalar(p.key) && p.key.value === key)?.value;
  if (isSeq(node) && typeof key === 'number') return node.items[key];
  return undefined;
}

/** The deepest YAML node that exists along `path` (a missing key points at its parent). */
function nearestNode(root: unknown, path: readonly (string | number)[]): Node | undefined {
  let node = root;
  let last = root as Node | undefined;
  for (const key of path) {
    node = child(node, key);
    if (node === undefined || node === null) break;
    last = node as Node;
  }
  return last;
}

/** The key node of `key` in the map at `path`, so "unknown key" points at the key itself. */
function keyNode(root: unknown, path: readonly (string | number)[], key: string): Node | undefined {
  const map = nearestNode(root, path);
  if (isMap(map)) {
    const pair = map.items.find((p) => isScalar(p.key) && p.key.value === key);
    if (pair && isScalar(pair.key)) return pair.key;
  }
  return map;
}

function pathOf(ancestors: readonly unknown[], node: unknown): string {
  const out: (string | number)[] = [];
  const chain = [...ancestors, node];
  for (let i = 0; i < chain.length - 1; i++) {
    const parent = chain[i];
    const next = chain[i + 1];
    if (isSeq(parent)) out.push(parent.items.indexOf(next as never));
    else if (isMap(parent)) {
      // `next` is a Pair here; the pair's key names the path step.
      const pair = next as { key?: unknown };
      if (isScalar(pair.key)) out.push(String(pair.key.value));
    }
  }
  return formatPath(out);
}

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, isAbsolute, join, resolve } from 'node:path';
import {
  ConfigError,
  type ConfigIssue,
  type LoadedConfig,
  type Locate,
  parseYamlDocument,
  policyDocument,
} from '../config/index.js';
import {
  type CompiledPolicy,
  compilePolicy,
  type PolicySpec,
  type RoleSource,
  type RuleSource,
} from './engine.js';

/**
 * Gathers a config's policy: the `policy` section plus every YAML document of `policy.files`
 * (files, or folders read in name order), each rule and role keeping its file and line.
 * Errors in any of them throw one {@link ConfigError} listing them all.
 *
 * @example
 * const policy = compilePolicy(policySpecOf(loadConfigFile('portcullis.yaml')));
 */
export function policySpecOf(loaded: LoadedConfig): PolicySpec {
  const { config } = loaded;
  const configFile = loaded.file ?? '(object)';
  const locate: Locate = loaded.locate ?? (() => ({ file: configFile, line: 0, column: 0 }));
  const rules: RuleSource[] = [];
  const roles: RoleSource[] = [];
  const add = (
    doc: { rules: RuleSource['rule'][]; roles: Record<string, Omit<RoleSource, 'name' | 'locate'>> },
    at: Locate,
    base: (string | number)[],
  ): void => {
    doc.rules.forEach((rule, i) => {
      rules.push({ rule, locate: (f) => at([...base, 'rules', i, ...f]) });
    });
    for (const [name, r] of Object.entries(doc.roles)) {
      roles.push({
        name,
        includes: r.includes,
        permissions: r.permissions,
        locate: (f) => at([...base, 'roles', name, ...f]),
      });
    }
  };
  add(config.policy, locate, ['policy']);

  const issues: ConfigIssue[] = [];
  const baseDir = loaded.file ? dirname(loaded.file) : process.cwd();
  for (const [i, entry] of config.policy.files.entries()) {
    const path = isAbsolute(entry) ? entry : resolve(baseDir, entry);
    let files: string[];
    try {
      files = statSync(path).isDirectory()
        ? readdirSync(path)
            .filter(
              (n) =>
                ['.yaml', '.yml'].includes(extname(n)) &&
                !n.endsWith('.test.yaml') &&
                !n.endsWith('.test.yml'),
            )
            .sort()
            .map((n) => join(path, n))
        : [path];
    } catch (err) {
      issues.push({
        ...locate(['policy', 'files', i]),
        path: `policy.files[${i}]`,
        message: `cannot read ${entry}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      });
      continue;
    }
    for (const file of files) {
      try {
        const { data, locate: at } = parseYamlDocument(readFileSync(file, 'utf8'), file, policyDocument);
        add(data, at, []);
      } catch (err) {
        if (err instanceof ConfigError) issues.push(...err.issues);
        else
          issues.push({
            file,
            line: 0,
            column: 0,
            path: '(file)',
            message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          });
      }
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return {
    rules,
    roles,
    schema: config.policy.schema,
    acrLevels: config.policy.acrLevels,
    routes: config.routes,
    principalAttributes: [...new Set(Object.values(config.issuers).flatMap((i) => i.claims))],
  };
}

/** Loads and compiles a config's whole policy (see {@link policySpecOf} and {@link compilePolicy}). */
export function loadPolicy(loaded: LoadedConfig): CompiledPolicy {
  return compilePolicy(policySpecOf(loaded));
}

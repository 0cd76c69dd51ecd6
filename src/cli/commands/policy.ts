import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { loadConfigFile } from '../../config/index.js';
import {
  type CompiledPolicy,
  type ConditionTrace,
  type Explanation,
  findPolicyTestFiles,
  loadPolicy,
  policyInputSchema,
  runPolicyTests,
  toPolicyInput,
} from '../../policy/index.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis policy check   [--config FILE] [--strict]          load the policy, print warnings (--strict: warnings fail)
  portcullis policy explain [--config FILE] --input FILE|- [--json]
                                                               decide one request and show why
  portcullis policy test    [--config FILE] [PATH ...]          run *.test.yaml policy tests (default: the policy's folders)`;

/**
 * `portcullis policy`: the policy as an operator sees it — load it with its warnings, explain one
 * decision rule by rule, and run policy tests (exit 1 when any fails).
 */
export const policy: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub === 'check') return check(rest, io);
  if (sub === 'explain') return explain(rest, io);
  if (sub === 'test') return test(rest, io);
  throw new UsageError(USAGE);
};

function load(
  configFlag: string | undefined,
  io: CliIO,
): { policy: CompiledPolicy; file: string; files: string[] } {
  const file = configPath(configFlag, io);
  const loaded = loadConfigFile(file, io.env ?? process.env);
  const base = dirname(resolve(file));
  const files = loaded.config.policy.files.map((f) => (isAbsolute(f) ? f : resolve(base, f)));
  return { policy: loadPolicy(loaded), file, files };
}

function printWarnings(policy: CompiledPolicy, io: CliIO): void {
  for (const w of policy.warnings)
    io.stderr.write(`warning: ${w.file}:${w.line}:${w.column}: rule ${w.ruleId}: ${w.message}\n`);
}

async function check(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(argv, { ...CONFIG_OPTION, strict: { type: 'boolean' } }, false);
  const { policy } = load(values.config, io);
  printWarnings(policy, io);
  io.stdout.write(`policy ok: ${policy.size} rules, ${policy.warnings.length} warning(s)\n`);
  return values.strict && policy.warnings.length > 0 ? 1 : 0;
}

async function explain(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(
    argv,
    { ...CONFIG_OPTION, input: { type: 'string', short: 'i' }, json: { type: 'boolean' } },
    false,
  );
  if (!values.input) throw new UsageError(USAGE);
  const { policy } = load(values.config, io);
  let text: string;
  try {
    text = values.input === '-' ? await readAll(io) : readFileSync(values.input, 'utf8');
  } catch (err) {
    io.stderr.write(
      `cannot read ${values.input}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`,
    );
    return 1;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    io.stderr.write(`${values.input}: not JSON: ${(err as Error).message}\n`);
    return 1;
  }
  const parsed = policyInputSchema.safeParse(raw);
  if (!parsed.success) {
    for (const i of parsed.error.issues)
      io.stderr.write(`${values.input}: ${i.path.join('.') || '(root)'}: ${i.message}\n`);
    return 1;
  }
  const e = policy.explain(toPolicyInput(parsed.data));
  io.stdout.write(values.json ? `${JSON.stringify(e, null, 2)}\n` : formatExplanation(e));
  return 0;
}

async function test(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, CONFIG_OPTION);
  const { policy, file, files } = load(values.config, io);
  printWarnings(policy, io);
  const roots = positionals.length > 0 ? positionals : files.length > 0 ? files : [dirname(resolve(file))];
  let testFiles: string[];
  try {
    testFiles = findPolicyTestFiles(roots.map((p) => resolve(p)));
  } catch (err) {
    io.stderr.write(
      `cannot read ${(err as NodeJS.ErrnoException).path ?? roots.join(', ')}: ${(err as NodeJS.ErrnoException).code}\n`,
    );
    return 1;
  }
  if (testFiles.length === 0) {
    io.stderr.write(`no *.test.yaml files under ${roots.join(', ')}\n`);
    return 1;
  }
  const results = runPolicyTests(policy, testFiles);
  let failed = 0;
  for (const r of results) {
    if (r.ok) {
      io.stdout.write(`ok    ${r.name}\n`);
      continue;
    }
    failed++;
    const want = `${r.want.decision}${r.want.rules ? ` by [${r.want.rules.join(', ')}]` : ''}`;
    const got = `${r.got.outcome} by [${r.got.ruleIds.join(', ')}]`;
    io.stdout.write(`FAIL  ${r.name}  (${r.file}:${r.line})\n      expected ${want}, got ${got}\n`);
    if (r.explanation) io.stdout.write(indent(formatExplanation(r.explanation), '      '));
  }
  io.stdout.write(`\n${results.length - failed} passed, ${failed} failed (${testFiles.length} file(s))\n`);
  return failed > 0 ? 1 : 0;
}

/** The human form of an explanation: the decision, then every rule considered and each condition part. */
export function formatExplanation(e: Explanation): string {
  const d = e.decision;
  const lines = [
    `decision: ${d.outcome}${d.ruleIds.length ? ` by ${d.ruleIds.join(', ')}` : ''} — ${d.reason}`,
  ];
  if (d.requirements) lines.push(`requires: ${JSON.stringify(d.requirements)}`);
  if (e.rules.length === 0) lines.push('no rule applies to this resource and action');
  for (const r of e.rules) {
    const mark = !r.applies ? '-' : r.matched ? (r.unmet ? '?' : '✓') : '✗';
    let line = `${mark} ${r.id} (${r.effect})`;
    if (!r.applies) line += `: not applicable, ${r.why}`;
    else if (r.error)
      line += `: condition error: ${r.error}${r.effect === 'deny' ? ' (counts as a match: fail closed)' : ''}`;
    else if (r.unmet) line += `: matched, but requires ${JSON.stringify(r.unmet)}`;
    else line += r.matched ? ': matched' : ': condition false';
    lines.push(line);
    if (r.condition) lines.push(...conditionLines(r.condition, '    '));
  }
  return `${lines.join('\n')}\n`;
}

function conditionLines(c: ConditionTrace, pad: string): string[] {
  const out = [`${pad}${c.expression}  → ${JSON.stringify(c.value)}`];
  for (const p of c.parts) out.push(...conditionLines(p, `${pad}  `));
  return out;
}

function indent(text: string, pad: string): string {
  return text
    .split('\n')
    .map((l) => (l ? pad + l : l))
    .join('\n');
}

async function readAll(io: CliIO): Promise<string> {
  const stdin = io.stdin ?? process.stdin;
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

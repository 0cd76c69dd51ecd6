import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import type { Ajv } from 'ajv';
import type { RouteConfig } from '../config/index.js';

const MAX_REPORTED = 5;
const MAX_UNIQUE_ITEMS = 1000;

/** The JSON pointer of a `uniqueItems: true` without a small `maxItems` (checking it is quadratic), if any. */
function uniqueItemsWithoutBound(node: unknown, at = '#'): string | undefined {
  if (Array.isArray(node)) {
    for (const [i, v] of node.entries()) {
      const found = uniqueItemsWithoutBound(v, `${at}/${i}`);
      if (found) return found;
    }
    return undefined;
  }
  if (typeof node !== 'object' || node === null) return undefined;
  const o = node as Record<string, unknown>;
  if (o.uniqueItems === true && !(typeof o.maxItems === 'number' && o.maxItems <= MAX_UNIQUE_ITEMS))
    return at;
  for (const [k, v] of Object.entries(o)) {
    const found = uniqueItemsWithoutBound(v, `${at}/${k}`);
    if (found) return found;
  }
  return undefined;
}

/**
 * Compiles routes' request-body JSON Schemas once, at load (ajv, all errors, strict mode: a schema with
 * unknown keywords or typos is a load error naming the route). The validator returns the failing
 * paths (`/items/0/qty: must be >= 1`), at most five, or undefined when the body is valid.
 */
export function requestSchemaCompiler(baseDir: string) {
  // ajv is loaded (CommonJS, synchronously) with the first route that has a schema: most configs have
  // none and need not carry it. allErrors off: a large invalid body must not build one error object
  // per element.
  let ajv: Ajv | undefined;
  const compiler = (): Ajv => {
    if (ajv) return ajv;
    const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
    ajv = new AjvClass({ allErrors: false, strict: true });
    return ajv;
  };
  return (route: RouteConfig): ((body: unknown) => string[] | undefined) | undefined => {
    let schema = route.requestSchema;
    if (route.requestSchemaFile !== undefined) {
      const file = isAbsolute(route.requestSchemaFile)
        ? route.requestSchemaFile
        : resolve(baseDir, route.requestSchemaFile);
      schema = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    }
    if (schema === undefined) return undefined;
    const unbounded = uniqueItemsWithoutBound(schema);
    if (unbounded)
      throw new Error(
        `route ${route.id}: request schema uses uniqueItems without maxItems ≤ ${MAX_UNIQUE_ITEMS} at ${unbounded} (quadratic to check)`,
      );
    let validate: ReturnType<Ajv['compile']>;
    try {
      validate = compiler().compile(schema);
    } catch (err) {
      throw new Error(`route ${route.id}: request schema does not compile: ${(err as Error).message}`);
    }
    return (body) => {
      if (validate(body)) return undefined;
      return (validate.errors ?? [])
        .slice(0, MAX_REPORTED)
        .map((e) => `${e.instancePath || '/'}: ${e.message ?? 'invalid'}`);
    };
  };
}

import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { Ajv } from 'ajv';
import type { RouteConfig } from '../config/index.js';

const MAX_REPORTED = 5;

/**
 * Compiles routes' request-body JSON Schemas once, at load (ajv, all errors, strict mode: a schema with
 * unknown keywords or typos is a load error naming the route). The validator returns the failing
 * paths (`/items/0/qty: must be >= 1`), at most five, or undefined when the body is valid.
 */
export function requestSchemaCompiler(baseDir: string) {
  const ajv = new Ajv({ allErrors: true, strict: true });
  return (route: RouteConfig): ((body: unknown) => string[] | undefined) | undefined => {
    let schema = route.requestSchema;
    if (route.requestSchemaFile !== undefined) {
      const file = isAbsolute(route.requestSchemaFile)
        ? route.requestSchemaFile
        : resolve(baseDir, route.requestSchemaFile);
      schema = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    }
    if (schema === undefined) return undefined;
    let validate: ReturnType<Ajv['compile']>;
    try {
      validate = ajv.compile(schema);
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

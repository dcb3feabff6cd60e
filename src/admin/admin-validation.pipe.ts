import { Injectable, type ArgumentMetadata, type PipeTransform } from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import { validateSync, type ValidationError } from 'class-validator';
import { InvalidRequestError } from '../common/errors';
import { hasLoneSurrogate } from '../common/unicode';

const PLAIN = new Set<unknown>([String, Number, Boolean, Array, Object]);
const RESERVED = ['__proto__', 'constructor', 'prototype'];

/**
 * Validates admin bodies and query strings against their DTO classes (class-validator). Bad input
 * is a 400 in OpenAI's shape whose message lists every field error; unknown fields are errors too,
 * so a misspelt limit never passes silently.
 */
@Injectable()
export class AdminValidationPipe implements PipeTransform {
  transform(value: unknown, meta: ArgumentMetadata): unknown {
    refuseUnstorable(value, meta);
    const type = meta.metatype;
    if (!type || PLAIN.has(type) || (meta.type !== 'body' && meta.type !== 'query')) return value;
    const where = meta.type === 'body' ? 'request body' : 'query';
    if (meta.type === 'body' && (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value))) {
      throw new InvalidRequestError('The request body must be a JSON object', 'body');
    }
    refuseReservedKeys(value, where);
    const dto = plainToInstance<object, unknown>(type as new () => object, value ?? {}, { exposeDefaultValues: true });
    const errors = validateSync(dto, { whitelist: true, forbidNonWhitelisted: true, forbidUnknownValues: true });
    if (errors.length > 0) {
      const fields = flatten(errors);
      throw new InvalidRequestError(
        `Invalid ${where}: ${fields.map((f) => f.message).join('; ')}`,
        [...new Set(fields.map((f) => f.field))].join(', '),
        'invalid_request',
      );
    }
    return dto;
  }
}

/**
 * Names that class-transformer leaves out before validation sees them, so that "should not exist"
 * would never be said: refused as every unknown field is (`where`: "request body", "query").
 * Nested too (in `metadata`, a list's items): there class-transformer took an own `constructor`
 * for the class to build, and threw (a 500).
 */
export function refuseReservedKeys(value: unknown, where: string): void {
  const odd: string[] = [];
  reservedKeys(value, '', odd);
  if (odd.length > 0)
    throw new InvalidRequestError(
      `Invalid ${where}: ${odd.map((k) => (k.includes('.') ? `key ${k} is a reserved name` : `property ${k} should not exist`)).join('; ')}`,
      odd.join(', '),
      'invalid_request',
    );
}

/** How many reserved names a refusal lists: enough to find them, not a message of megabytes. */
const MAX_RESERVED_LISTED = 10;

/** Adds to `out` the paths of reserved names at any depth (the body reader caps the depth), up to MAX_RESERVED_LISTED. */
function reservedKeys(v: unknown, path: string, out: string[]): void {
  if (v === null || typeof v !== 'object') return;
  for (const k of RESERVED) if (Object.hasOwn(v, k) && out.length < MAX_RESERVED_LISTED) out.push(path ? `${path}.${k}` : k);
  for (const k in v) {
    if (out.length >= MAX_RESERVED_LISTED) return;
    const x = (v as Record<string, unknown>)[k];
    if (Object.hasOwn(v, k) && x !== null && typeof x === 'object') reservedKeys(x, path ? `${path}.${k}` : k, out);
  }
}

/** class-validator's names of the checks that a value is of the right type. */
const TYPE_CONSTRAINTS = new Set([
  'isInt',
  'isNumber',
  'isString',
  'isBoolean',
  'isArray',
  'isObject',
  'isDate',
  'isTimestamp',
  'isUsdAmount',
]);

function flatten(errors: ValidationError[], parent = ''): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  for (const e of errors) {
    const field = parent ? `${parent}.${e.property}` : e.property;
    const constraints = e.constraints ?? {};
    // A value of the wrong type is told that alone: "not an integer" says all, where "not less
    // than 1; not greater than 500" as well would contradict each other for "abc".
    const wrongType = Object.keys(constraints).find((k) => TYPE_CONSTRAINTS.has(k));
    for (const message of wrongType ? [constraints[wrongType]] : Object.values(constraints)) out.push({ field, message });
    if (e.children?.length) out.push(...flatten(e.children, field));
  }
  return out;
}

/**
 * Refuses admin input holding U+0000, which PostgreSQL's text cannot store, or a lone surrogate,
 * which neither database stores as sent: a 400 naming the field, rather than the database's
 * error as a 500 or a name that reads back otherwise. (AdminValidationPipe runs it too.)
 */
@Injectable()
export class NoNulPipe implements PipeTransform {
  transform(value: unknown, meta: ArgumentMetadata): unknown {
    refuseUnstorable(value, meta);
    return value;
  }
}

function refuseUnstorable(value: unknown, meta: ArgumentMetadata): void {
  const bad = unstorableAt(value, meta.type === 'param' || meta.data ? (meta.data ?? 'path') : '');
  if (bad === undefined) return;
  const what = bad.nul ? 'NUL (\\u0000) characters' : 'half of a UTF-16 surrogate pair (\\ud800-\\udfff) without the other';
  throw new InvalidRequestError(`${bad.path || 'The value'} must not contain ${what}`, bad.path || null, 'invalid_request');
}

/**
 * The path of the first string in `v` that no database can store as sent ('' for `v` itself):
 * one holding U+0000 (PostgreSQL refuses it) or a lone surrogate (stored as U+FFFD, or on SQLite
 * as bytes that are not UTF-8), so that what is stored is what was sent; undefined if none.
 */
function unstorableAt(v: unknown, path: string, depth = 0): { path: string; nul: boolean } | undefined {
  if (typeof v === 'string') {
    if (v.includes('\u0000')) return { path, nul: true };
    return hasLoneSurrogate(v) ? { path, nul: false } : undefined;
  }
  if (depth > 20 || v === null || typeof v !== 'object') return undefined;
  for (const [k, x] of Object.entries(v)) {
    const found = unstorableAt(x, path ? `${path}.${k}` : k, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

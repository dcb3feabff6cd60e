import { MAX_TIMER_MS } from '../common/deadline';
import { SECRET_NAME } from '../common/secret-names';
import type { YamlPath, YamlSource } from './yaml-source';

type Obj = Record<string, unknown>;

/**
 * Reads typed fields out of a parsed YAML tree, collecting every problem with its file, line and
 * key path instead of stopping at the first.
 */
export class FieldReader {
  readonly problems: string[] = [];

  constructor(readonly src: YamlSource) {}

  fail(path: YamlPath, message: string): void {
    this.problems.push(`${this.src.where(path)}: ${message}`);
  }

  isObject(v: unknown): v is Obj {
    return typeof v === 'object' && v !== null && !Array.isArray(v);
  }

  object(v: unknown, path: YamlPath): Obj | undefined {
    if (this.isObject(v)) return v;
    this.fail(path, `must be a mapping, got ${describe(v)}`);
    return undefined;
  }

  /** The first of `keys` present in `o` (aliases such as `input_cache_read` / `input_cache_reads`). */
  pick(o: Obj, keys: readonly string[]): [string, unknown] {
    for (const k of keys) if (o[k] !== undefined && o[k] !== null) return [k, o[k]];
    return [keys[0], undefined];
  }

  string(o: Obj, keys: string | readonly string[], path: YamlPath, required = false): string | undefined {
    const [key, v] = this.pick(o, typeof keys === 'string' ? [keys] : keys);
    if (v === undefined) {
      if (required) this.fail([...path, key], 'is required');
      return undefined;
    }
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (typeof v !== 'string') {
      this.fail([...path, key], `must be a string, got ${describe(v, key)}`);
      return undefined;
    }
    if (required && v.trim() === '') {
      this.fail([...path, key], 'must not be empty');
      return undefined;
    }
    return v;
  }

  number(
    o: Obj,
    keys: string | readonly string[],
    path: YamlPath,
    opts: { min?: number; max?: number; integer?: boolean } = {},
  ): number | undefined {
    const [key, v] = this.pick(o, typeof keys === 'string' ? [keys] : keys);
    if (v === undefined) return undefined;
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    const bad = (why: string) => {
      this.fail([...path, key], `${why}, got ${describe(v, key)}`);
      return undefined;
    };
    if (typeof n !== 'number' || !Number.isFinite(n)) return bad('must be a number');
    if (opts.integer && !Number.isInteger(n)) return bad('must be a whole number');
    if (opts.min !== undefined && n < opts.min) return bad(`must be at least ${opts.min}`);
    // A time in ms (`*_ms`) is held by a Node timer, which fires at once past 2^31-1 ms.
    const max = opts.max ?? (key.endsWith('_ms') ? MAX_TIMER_MS : undefined);
    if (max !== undefined && n > max) return bad(`must be at most ${max}`);
    return n;
  }

  boolean(o: Obj, keys: string | readonly string[], path: YamlPath): boolean | undefined {
    const [key, v] = this.pick(o, typeof keys === 'string' ? [keys] : keys);
    if (v === undefined) return undefined;
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === 'false') return v === 'true';
    this.fail([...path, key], `must be true or false, got ${describe(v, key)}`);
    return undefined;
  }

  stringList(o: Obj, keys: string | readonly string[], path: YamlPath): string[] | undefined {
    const [key, v] = this.pick(o, typeof keys === 'string' ? [keys] : keys);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' && typeof x !== 'number')) {
      this.fail([...path, key], `must be a list of strings, got ${describe(v, key)}`);
      return undefined;
    }
    return v.map(String);
  }

  stringMap(o: Obj, key: string, path: YamlPath): Record<string, string> | undefined {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (!this.isObject(v) || Object.values(v).some((x) => typeof x !== 'string' && typeof x !== 'number')) {
      this.fail([...path, key], `must be a mapping of strings, got ${describe(v, key)}`);
      return undefined;
    }
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
  }
}

/** Keys whose values are secrets (`api_key`, `api_keys`, `token`, `client_secret`, ...): named in errors, never shown. */
const SECRET_KEY = /(key|keys|token|secret|password|credentials?)$/i;

/**
 * A value as an error message shows it. Never a secret: the value of a secret's key is hidden,
 * and a URL's credentials (`https://user:password@host`) are masked.
 */
export function describe(v: unknown, key?: string): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (key !== undefined && SECRET_KEY.test(key)) return `${typeof v} (hidden)`;
  return `${typeof v} ${JSON.stringify(typeof v === 'string' ? withoutUrlCredentials(v) : v)}`;
}

/**
 * `scheme://user:password@host/...` → `scheme://***@host/...` (also with a mistyped `scheme:/`),
 * and the values of query parameters named as credentials (`?key=`, `&sig=`, SECRET_NAME) →
 * `***`, also in a URL that does not parse (the messages that quote one are about such URLs).
 */
export function withoutUrlCredentials(text: string): string {
  return text
    .replace(/(^|[^\w+.-])([a-z][\w+.-]*:\/*)[^\s/@]*@/gi, '$1$2***@')
    .replace(/([?&;])([^=&#\s"]+)=([^&#\s"]*)/g, (all: string, sep: string, name: string) =>
      SECRET_NAME.test(name) ? `${sep}${name}=***` : all,
    );
}

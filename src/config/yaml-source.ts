import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';

export type YamlPath = ReadonlyArray<string | number>;

/** A `${VAR}` with no value and no default, found while loading. */
export interface Unresolved {
  path: YamlPath;
  variable: string;
  line: number;
}

/** A problem in a config file, located by file, line and key path. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export function formatPath(path: YamlPath): string {
  let out = '';
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : out ? `.${part}` : part;
  return out || '(root)';
}

const VAR = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Expands `${VAR}` and `${VAR:-default}` (default when unset or empty) in one string; `$${`
 * stands for a literal `${`. Returns the names of variables that had neither value nor default
 * (`missing`) and of those referenced without a default whose value is blank (`blank`).
 */
export function substitute(
  text: string,
  vars: Readonly<Record<string, string | undefined>>,
): { value: string; missing: string[]; blank: string[]; malformed?: string } {
  if (!text.includes('${')) return { value: text, missing: [], blank: [] };
  let out = '';
  const missing: string[] = [];
  const blank: string[] = [];
  let i = 0;
  while (i < text.length) {
    const at = text.indexOf('$', i);
    if (at < 0) {
      out += text.slice(i);
      break;
    }
    out += text.slice(i, at);
    if (text.startsWith('$${', at)) {
      out += '${';
      i = at + 3;
      continue;
    }
    if (!text.startsWith('${', at)) {
      out += '$';
      i = at + 1;
      continue;
    }
    const end = closingBrace(text, at + 2);
    if (end < 0) return { value: text, missing, blank, malformed: `unterminated "\${" in "${text}"` };
    const expr = text.slice(at + 2, end);
    const sep = expr.indexOf(':-');
    const name = sep < 0 ? expr : expr.slice(0, sep);
    if (!VAR.test(name)) return { value: text, missing, blank, malformed: `"\${${expr}}" is not a variable reference` };
    const value = vars[name];
    if (sep >= 0) {
      if (value !== undefined && value !== '') out += value;
      else {
        // A default may itself hold references (`${A:-${B}}`), expanded only when it is used.
        const inner = substitute(expr.slice(sep + 2), vars);
        if (inner.malformed) return { value: text, missing, blank, malformed: inner.malformed };
        out += inner.value;
        missing.push(...inner.missing);
        blank.push(...inner.blank);
      }
    } else if (value !== undefined) {
      out += value;
      if (value.trim() === '') blank.push(name);
    } else missing.push(name);
    i = end + 1;
  }
  return { value: out, missing, blank };
}

/** The `}` that closes the reference whose name starts at `from`, past any nested `${...}`; -1 if none. */
function closingBrace(text: string, from: number): number {
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    // An escaped `$${...}` in a default has its own closing brace, as a reference has.
    if (text.startsWith('$${', i)) {
      depth++;
      i += 2;
    } else if (text.startsWith('${', i)) {
      depth++;
      i++;
    } else if (text[i] === '}') {
      if (depth === 0) return i;
      depth--;
    }
  }
  return -1;
}

/** Aliases followed inside aliases at most this deep (the document's own alias count is capped too). */
const MAX_ALIAS_DEPTH = 8;
/** The YAML library's limit on alias expansion (its resource exhaustion guard). */
const MAX_ALIAS_COUNT = 100;

/** `<<` as the key of a pair: a merge (yaml parses it as a scalar whose value is a symbol). */
function isMergeKey(key: unknown): boolean {
  if (!isScalar(key)) return false;
  const v = key.value;
  return v === '<<' || (typeof v === 'symbol' && v.description === '<<');
}

/**
 * A parsed YAML file whose strings have had their variables expanded. It remembers where each
 * node came from so that every later validation error can name file, line and key.
 */
export class YamlSource {
  private constructor(
    readonly file: string,
    readonly value: unknown,
    readonly unresolved: Unresolved[],
    /** `${VAR}` references (no default) whose variable is set but blank. */
    readonly blanks: Unresolved[],
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  static load(file: string, vars: Readonly<Record<string, string | undefined>>): YamlSource {
    return YamlSource.parse(file, readConfigFile(file), vars);
  }

  static parse(file: string, text: string, vars: Readonly<Record<string, string | undefined>>): YamlSource {
    const lines = new LineCounter();
    // merge: YAML 1.1's `<<: *anchor`, which the YAML 1.2 default would take for a plain key.
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, merge: true });
    if (doc.errors.length > 0) {
      throw new ConfigError(
        doc.errors.map((e) => `${file}:${lines.linePos(e.pos[0]).line}: YAML syntax error: ${e.message.split('\n')[0]}`),
      );
    }
    // Aliases that expand to millions of nodes (a "billion laughs" file) are refused before the
    // walk below follows them: it would block the process for minutes, reloads and requests too.
    try {
      doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (err) {
      throw new ConfigError([`${file}: ${(err as Error).message}`]);
    }
    const unresolved: Unresolved[] = [];
    const blanks: Unresolved[] = [];
    const problems: string[] = [];
    const lineOf = (node: Node | null | undefined) => (node?.range ? lines.linePos(node.range[0]).line : 0);
    /** Each string scalar's substitution, made once: an alias meets the same node again. */
    const done = new WeakMap<object, ReturnType<typeof substitute>>();
    const walk = (node: unknown, path: (string | number)[], depth = 0): void => {
      if (isAlias(node)) {
        // What an alias stands for is used here too: its variables are this path's as well
        // (an unset one must be reported where it is used, e.g. in a route that is not optional).
        if (depth < MAX_ALIAS_DEPTH) walk(node.resolve(doc), path, depth + 1);
      } else if (isScalar(node)) {
        if (typeof node.value !== 'string' && !done.has(node)) return;
        let r = done.get(node);
        if (!r) {
          r = substitute(node.value as string, vars);
          done.set(node, r);
          if (r.malformed) problems.push(`${file}:${lineOf(node)} (${formatPath(path)}): ${r.malformed}`);
          node.value = r.value;
        }
        for (const variable of r.missing) unresolved.push({ path: [...path], variable, line: lineOf(node) });
        for (const variable of r.blank) blanks.push({ path: [...path], variable, line: lineOf(node) });
      } else if (isMap(node)) {
        for (const pair of node.items) {
          // A merge key (`<<: *defaults`) puts the merged mapping's keys in this one.
          if (isMergeKey(pair.key)) walk(pair.value, path, depth);
          else walk(pair.value, [...path, isScalar(pair.key) ? String(pair.key.value) : String(pair.key)], depth);
        }
      } else if (isSeq(node)) {
        node.items.forEach((item, i) => walk(item, [...path, i], depth));
      }
    };
    walk(doc.contents, []);
    if (problems.length > 0) throw new ConfigError(problems);
    return new YamlSource(file, doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }), unresolved, blanks, doc, lines);
  }

  lineOf(path: YamlPath): number | undefined {
    for (let n = path.length; n >= 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true) as Node | undefined;
      if (node?.range) return this.lines.linePos(node.range[0]).line;
      // A key whose value is null has no node of its own; fall back to the parent.
    }
    return undefined;
  }

  /** "config/models.yaml:12 (models[0].route[1].base_url)" */
  where(path: YamlPath): string {
    const line = this.lineOf(path);
    return `${this.file}${line ? `:${line}` : ''} (${formatPath(path)})`;
  }

  /** Unresolved variables at or below `path`. */
  unresolvedUnder(path: YamlPath): Unresolved[] {
    return this.unresolved.filter((u) => path.every((p, i) => u.path[i] === p));
  }

  /** Blank `${VAR}` references (no default) at or below `path`. */
  blanksUnder(path: YamlPath): Unresolved[] {
    return this.blanks.filter((u) => path.every((p, i) => u.path[i] === p));
  }

  describeUnresolved(u: Unresolved): string {
    return `${this.file}:${u.line} (${formatPath(u.path)}): environment variable ${u.variable} is not set and has no default (write \${${u.variable}:-default} to give one)`;
  }
}

/** A config file's text; one that cannot be read is a ConfigError naming it. */
export function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    // Relative paths are the working directory's: a gateway started from elsewhere says where it looked.
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    const reason = missing ? `no such file (looked for ${resolve(file)})` : (err as Error).message;
    throw new ConfigError([`${file}: cannot read: ${reason}`]);
  }
}

import { ConfigError, formatPath, substitute, YamlSource } from './yaml-source';

describe('substitute', () => {
  it('leaves text without references untouched', () => {
    expect(substitute('plain $5 text', {})).toEqual({ value: 'plain $5 text', missing: [], blank: [] });
  });

  it('expands ${VAR} from the variables', () => {
    expect(substitute('http://${HOST}/v1', { HOST: 'gpu-1:8000' })).toEqual({ value: 'http://gpu-1:8000/v1', missing: [], blank: [] });
  });

  it('expands a set but empty ${VAR} to the empty string', () => {
    expect(substitute('[${EMPTY}]', { EMPTY: '' })).toEqual({ value: '[]', missing: [], blank: ['EMPTY'] });
  });

  it('uses the default of ${VAR:-default} only when the variable is unset or empty', () => {
    expect(substitute('${PORT:-8000}', {}).value).toBe('8000');
    expect(substitute('${PORT:-8000}', { PORT: '' }).value).toBe('8000');
    expect(substitute('${PORT:-8000}', { PORT: '9000' }).value).toBe('9000');
  });

  it('accepts an empty default and a default containing ":-"', () => {
    expect(substitute('[${KEY:-}]', {})).toEqual({ value: '[]', missing: [], blank: [] });
    expect(substitute('${A:-x:-y}', {}).value).toBe('x:-y');
  });

  it('expands references in a default, and only when the default is used', () => {
    expect(substitute('${A:-${B}}', { B: 'sk-real' })).toEqual({ value: 'sk-real', missing: [], blank: [] });
    expect(substitute('${A:-${B:-${C}}}/x', { C: 'c' })).toEqual({ value: 'c/x', missing: [], blank: [] });
    expect(substitute('${A:-pre-${B}-$${lit}}', { B: 'b' }).value).toBe('pre-b-${lit}');
    expect(substitute('${A:-$${x}}', { A: 'a' }).value).toBe('a');
    expect(substitute('${A:-$${x}}/y', {}).value).toBe('${x}/y');
    // A set variable wins; an unset one inside its unused default is no problem.
    expect(substitute('${A:-${B}}', { A: 'a' })).toEqual({ value: 'a', missing: [], blank: [] });
    expect(substitute('${A:-${B}}', {})).toEqual({ value: '', missing: ['B'], blank: [] });
    expect(substitute('${A:-${B}', { B: 'b' }).malformed).toMatch(/unterminated/);
  });

  it('writes a literal "${" for "$${" without expanding what follows', () => {
    expect(substitute('cost: $${PRICE}', { PRICE: '5' })).toEqual({ value: 'cost: ${PRICE}', missing: [], blank: [] });
  });

  it('expands several references in one string', () => {
    const r = substitute('${SCHEME:-http}://${HOST}:${PORT}/$${raw}', { HOST: 'h', PORT: '1' });
    expect(r).toEqual({ value: 'http://h:1/${raw}', missing: [], blank: [] });
  });

  it('does not expand references inside a value', () => {
    expect(substitute('${A}', { A: '${B}', B: 'b' }).value).toBe('${B}');
  });

  it('reports every variable that has neither value nor default', () => {
    const r = substitute('${A}-${B:-b}-${C}', { B: '' });
    expect(r.missing).toEqual(['A', 'C']);
    expect(r.value).toBe('-b-');
    expect(r.malformed).toBeUndefined();
  });

  it('reports an unterminated "${" as malformed', () => {
    const r = substitute('http://${HOST', { HOST: 'h' });
    expect(r.malformed).toMatch(/unterminated/);
    expect(r.value).toBe('http://${HOST');
  });

  it.each(['${1ABC}', '${A-B}', '${}', '${ A }', '${A:B}'])('reports %s as not a variable reference', (text) => {
    const r = substitute(text, { A: 'a', B: 'b', ABC: 'abc' });
    expect(r.malformed).toMatch(/is not a variable reference/);
  });
});

describe('formatPath', () => {
  it('joins keys with dots and indices with brackets', () => {
    expect(formatPath(['models', 0, 'route', 1, 'base_url'])).toBe('models[0].route[1].base_url');
    expect(formatPath([])).toBe('(root)');
  });
});

describe('YamlSource.parse', () => {
  const text = [
    'models:', //                                   1
    '  - id: a', //                                 2
    '    context_length: 4096', //                  3
    '    tags: ["${TAG}", "${MISSING_TAG}"]', //    4
    '    route:', //                                5
    '      - kind: vllm', //                        6
    '        base_url: ${VLLM_URL}', //             7
    '      - kind: openai_compat', //               8
    '        base_url: ${REMOTE_URL}', //           9
    '        api_key: ${KEY:-none}', //             10
  ].join('\n');

  it('expands variables in nested maps and lists and keeps other scalars as they are', () => {
    const src = YamlSource.parse('models.yaml', text, { TAG: 'fast', VLLM_URL: 'http://gpu:8000/v1', REMOTE_URL: 'https://r/v1' });
    expect(src.value).toEqual({
      models: [
        {
          id: 'a',
          context_length: 4096,
          tags: ['fast', ''],
          route: [
            { kind: 'vllm', base_url: 'http://gpu:8000/v1' },
            { kind: 'openai_compat', base_url: 'https://r/v1', api_key: 'none' },
          ],
        },
      ],
    });
  });

  it('records each unresolved variable with its line and key path', () => {
    const src = YamlSource.parse('models.yaml', text, { TAG: 'fast' });
    expect(src.unresolved).toEqual([
      { path: ['models', 0, 'tags', 1], variable: 'MISSING_TAG', line: 4 },
      { path: ['models', 0, 'route', 0, 'base_url'], variable: 'VLLM_URL', line: 7 },
      { path: ['models', 0, 'route', 1, 'base_url'], variable: 'REMOTE_URL', line: 9 },
    ]);
  });

  it('refuses aliases that expand without bound ("billion laughs") at once, naming the file', () => {
    const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i <= 7; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(', ')}]`,
      );
    // Nine levels held the process for about 15 minutes; seven, some seconds.
    expect(() => YamlSource.parse('routing.yaml', lines.join('\n'), {})).toThrow(ConfigError);
    expect(() => YamlSource.parse('routing.yaml', lines.join('\n'), {})).toThrow(/routing\.yaml: Excessive alias count/);
  });

  it('takes YAML merge keys, and reports an unset variable where an alias or a merge uses it', () => {
    const src = YamlSource.parse(
      'models.yaml',
      [
        'x-common: &common {tokens: 7, api_key: "${KEY}"}', // 1
        'x-key: &k "${KEY}"', // 2
        'models:', // 3
        '  - route:', // 4
        '      - <<: *common', // 5
        '        kind: mock', // 6
        '      - {kind: vllm, api_key: *k}', // 7
      ].join('\n'),
      { HOST: 'h' },
    );
    expect(src.value).toMatchObject({
      models: [
        {
          route: [
            { tokens: 7, api_key: '', kind: 'mock' },
            { kind: 'vllm', api_key: '' },
          ],
        },
      ],
    });
    expect(src.unresolvedUnder(['models', 0, 'route', 0]).map((u) => [u.path.join('.'), u.line])).toEqual([
      ['models.0.route.0.api_key', 1],
    ]);
    expect(src.unresolvedUnder(['models', 0, 'route', 1]).map((u) => [u.path.join('.'), u.line])).toEqual([
      ['models.0.route.1.api_key', 2],
    ]);
  });

  it('finds the unresolved variables below a path', () => {
    const src = YamlSource.parse('models.yaml', text, { TAG: 'fast' });
    expect(src.unresolvedUnder(['models', 0, 'route', 1]).map((u) => u.variable)).toEqual(['REMOTE_URL']);
    expect(src.unresolvedUnder(['models', 0, 'route']).map((u) => u.variable)).toEqual(['VLLM_URL', 'REMOTE_URL']);
  });

  it('describes an unresolved variable with file, line, key and name', () => {
    const src = YamlSource.parse('models.yaml', text, { TAG: 'fast', MISSING_TAG: 'x', REMOTE_URL: 'https://r' });
    expect(src.unresolved).toHaveLength(1);
    const message = src.describeUnresolved(src.unresolved[0]);
    expect(message).toMatch(/^models\.yaml:7 \(models\[0\]\.route\[0\]\.base_url\): environment variable VLLM_URL is not set/);
  });

  it('locates a key path as file:line (path)', () => {
    const src = YamlSource.parse('config/models.yaml', text, {});
    expect(src.where(['models', 0, 'route', 1, 'base_url'])).toBe('config/models.yaml:9 (models[0].route[1].base_url)');
    expect(src.where(['models', 0, 'context_length'])).toBe('config/models.yaml:3 (models[0].context_length)');
    expect(src.lineOf(['models', 0, 'route', 1])).toBe(8);
  });

  it('locates a missing key at its nearest existing parent', () => {
    const src = YamlSource.parse('models.yaml', text, {});
    expect(src.where(['models', 0, 'route', 0, 'weight'])).toBe('models.yaml:6 (models[0].route[0].weight)');
  });

  it('reports a YAML syntax error with file and line', () => {
    const broken = 'models:\n  - id: a\n context_length: 1\n';
    expect(() => YamlSource.parse('models.yaml', broken, {})).toThrow(ConfigError);
    expect(() => YamlSource.parse('models.yaml', broken, {})).toThrow(/^models\.yaml:3: YAML syntax error: /);
  });

  it('reports a duplicate key as a syntax error with its line', () => {
    expect(() => YamlSource.parse('routing.yaml', 'timeout: 1\nhealth_check: 0\ntimeout: 2\n', {})).toThrow(
      /^routing\.yaml:3: YAML syntax error: .*unique/,
    );
  });

  it('rejects a malformed reference with file, line and key path', () => {
    let error: unknown;
    try {
      YamlSource.parse('models.yaml', 'a:\n  b: ok\n  c: "${OOPS"\n', {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([expect.stringMatching(/^models\.yaml:3 \(a\.c\): unterminated/)]);
  });

  it('collects every malformed reference before failing', () => {
    let error: unknown;
    try {
      YamlSource.parse('x.yaml', 'a: ${1}\nb: ${ok\n', {});
    } catch (err) {
      error = err;
    }
    expect((error as ConfigError).problems).toHaveLength(2);
    expect((error as ConfigError).message).toMatch(/^2 problems:/);
  });
});

describe('YamlSource.load', () => {
  it('names the path it looked for when a relative file is missing', () => {
    expect(() => YamlSource.load('config/no-such-models.yaml', {})).toThrow(
      `config/no-such-models.yaml: cannot read: no such file (looked for ${process.cwd()}/config/no-such-models.yaml)`,
    );
  });
});

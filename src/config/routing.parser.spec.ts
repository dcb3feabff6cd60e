import { EMPTY_ROUTING, normaliseEndpoint, parseRouting, sameEndpoint } from './routing.parser';
import { ConfigError, YamlSource } from './yaml-source';

function parse(text: string, vars: Record<string, string> = {}) {
  const warnings: string[] = [];
  const routing = parseRouting(YamlSource.parse('routing.yaml', text, vars), (m) => warnings.push(m));
  return { routing, warnings };
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

describe('parseRouting', () => {
  it('reads every setting', () => {
    const { routing, warnings } = parse(
      [
        'routing_strategy: fixed',
        'routing_parameter:',
        '  local_fraction: 0.7',
        'timeout: 600',
        'health_check: 30',
        'local_deployment:',
        '  - endpoint: http://gpu-1:8000/v1',
        '    models: [llama, meta-llama/Llama-3.1-8B-Instruct]',
        'remote_deployment:',
        '  - endpoint: https://api.example.com/v1',
      ].join('\n'),
    );
    expect(warnings).toEqual([]);
    expect(routing).toEqual({
      strategy: 'fixed',
      strategyWhere: 'routing.yaml:1 (routing_strategy)',
      localFraction: 0.7,
      totalTimeoutMs: 600_000,
      healthCheckSeconds: 30,
      localDeployments: [{ endpoint: 'http://gpu-1:8000/v1', models: ['llama', 'meta-llama/Llama-3.1-8B-Instruct'] }],
      remoteDeployments: [{ endpoint: 'https://api.example.com/v1', models: [] }],
      file: 'routing.yaml',
      retry: { maxRetries: 2, backoffMs: 200, maxBackoffMs: 5000, maxRetryAfterMs: 10_000, maxAttempts: 6 },
      circuitBreaker: { failureThreshold: 5, cooldownMs: 30_000, halfOpenRequests: 1 },
      healthCheckTimeoutMs: 5000,
      statsWindow: { size: 50, seconds: 300 },
      stateSyncMs: 1000,
    });
  });

  it('reads retry, circuit breaker, probe timeout, stats window and sync settings', () => {
    const { routing, warnings } = parse(
      [
        'retry: { max_retries: 1, backoff_ms: 50, max_backoff_ms: 400, max_retry_after_ms: 2000, max_attempts: 3 }',
        'circuit_breaker: { failure_threshold: 2, cooldown_seconds: 1.5, half_open_requests: 2 }',
        'health_check_timeout_ms: 800',
        'stats_window: { size: 10, seconds: 60 }',
        'state_sync_ms: 200',
      ].join('\n'),
    );
    expect(warnings).toEqual([]);
    expect(routing.retry).toEqual({ maxRetries: 1, backoffMs: 50, maxBackoffMs: 400, maxRetryAfterMs: 2000, maxAttempts: 3 });
    expect(routing.circuitBreaker).toEqual({ failureThreshold: 2, cooldownMs: 1500, halfOpenRequests: 2 });
    expect(routing.healthCheckTimeoutMs).toBe(800);
    expect(routing.statsWindow).toEqual({ size: 10, seconds: 60 });
    expect(routing.stateSyncMs).toBe(200);
  });

  it('keeps the defaults of retry settings that are not given', () => {
    expect(parse('retry: { max_retries: 0 }\n').routing.retry).toEqual({
      maxRetries: 0,
      backoffMs: 200,
      maxBackoffMs: 5000,
      maxRetryAfterMs: 10_000,
      maxAttempts: 6,
    });
  });

  it('rejects unknown and out-of-range retry and circuit settings with file, line and key', () => {
    const problems = problemsOf(() => parse('retry:\n  max_retry: 3\n  max_attempts: 0\ncircuit_breaker:\n  failure_threshold: 1.5\n'));
    expect(problems).toEqual([
      expect.stringMatching(/^routing\.yaml:3 \(retry\.max_attempts\): must be at least 1/),
      expect.stringMatching(/^routing\.yaml:2 \(retry\.max_retry\): unknown setting; use max_retries, /),
      expect.stringMatching(/^routing\.yaml:5 \(circuit_breaker\.failure_threshold\): must be a whole number/),
    ]);
  });

  it('refuses times no Node timer holds (they would fire at once)', () => {
    const problems = problemsOf(() =>
      parse(
        'timeout: 3000000\nhealth_check: 3000000\nhealth_check_timeout_ms: 3000000000\ncircuit_breaker:\n  cooldown_seconds: 3000000\n',
      ),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/\(timeout\): must be at most 2147483\.647/),
        expect.stringMatching(/\(health_check\): must be at most 2147483\.647/),
        expect.stringMatching(/\(health_check_timeout_ms\): must be at most 2147483647/),
        expect.stringMatching(/\(circuit_breaker\.cooldown_seconds\): must be at most 2147483\.647/),
      ]),
    );
  });

  it.each(['0.0004', '0.002', '0.5'])('refuses health_check: %s, a probe of every endpoint many times a second (or off, unsaid)', (v) => {
    expect(problemsOf(() => parse(`health_check: ${v}\n`))).toEqual([
      `routing.yaml:1 (health_check): must be 0 (off) or at least 1 second, got ${v}`,
    ]);
  });

  it('gives the defaults for an empty file', () => {
    expect(parse('').routing).toEqual({ ...EMPTY_ROUTING, file: 'routing.yaml' });
  });

  it('accepts default_router as another name for routing_strategy', () => {
    expect(parse('default_router: priority\n').routing.strategy).toBe('priority');
  });

  it('rejects a local_fraction outside 0..1 with file, line and key', () => {
    expect(parse('routing_parameter:\n  local_frac: 0.9\n').warnings).toEqual([
      expect.stringMatching(/routing_parameter\.local_frac\): unknown key "local_frac" ignored/),
    ]);
    const problems = problemsOf(() => parse('routing_strategy: fixed\nrouting_parameter:\n  local_fraction: 1.5\n'));
    expect(problems).toEqual([expect.stringMatching(/^routing\.yaml:3 \(routing_parameter\.local_fraction\): must be at most 1/)]);
    expect(problemsOf(() => parse('routing_parameter:\n  local_fraction: -0.1\n'))[0]).toMatch(/must be at least 0/);
  });

  it('accepts local_fraction at both ends of the range', () => {
    expect(parse('routing_parameter:\n  local_fraction: 0\n').routing.localFraction).toBe(0);
    expect(parse('routing_parameter:\n  local_fraction: 1\n').routing.localFraction).toBe(1);
  });

  it('skips a deployment whose endpoint variable is unset, with a warning', () => {
    const { routing, warnings } = parse('local_deployment:\n  - endpoint: ${VLLM_URL}\n    models: []\n  - endpoint: http://gpu-2:8000\n');
    expect(routing.localDeployments).toEqual([{ endpoint: 'http://gpu-2:8000', models: [] }]);
    expect(warnings).toEqual([expect.stringMatching(/^routing\.yaml:2 \(local_deployment\[0\]\): skipped: VLLM_URL not set/)]);
  });

  it('uses the default of an endpoint variable', () => {
    const { routing } = parse('local_deployment:\n  - endpoint: ${VLLM_URL:-http://localhost:8000/v1}\n');
    expect(routing.localDeployments).toEqual([{ endpoint: 'http://localhost:8000/v1', models: [] }]);
  });

  it('rejects an unset variable outside the deployments, naming file, line, key and variable', () => {
    const problems = problemsOf(() => parse('timeout: 600\nrouting_strategy: ${STRATEGY}\n'));
    expect(problems).toEqual([expect.stringMatching(/^routing\.yaml:2 \(routing_strategy\): environment variable STRATEGY is not set/)]);
  });

  it("rejects an unset variable in a deployment's model list", () => {
    // Only an unset endpoint makes a deployment optional; an unset model name would silently
    // turn into "" and match nothing.
    const problems = problemsOf(() => parse('local_deployment:\n  - endpoint: http://gpu:8000\n    models: ["${LOCAL_MODEL}"]\n'));
    expect(problems).toEqual([expect.stringMatching(/routing\.yaml:3 .*LOCAL_MODEL/)]);
  });

  it('warns about unknown keys, naming the key a misspelt one is likely meant to be', () => {
    const { warnings } = parse('routing_strategy: weighted\nlocal_fracton: 0.3\ncircuit_breakr: {}\n');
    expect(warnings).toEqual([
      expect.stringMatching(/^routing\.yaml:2 \(local_fracton\): unknown key "local_fracton" ignored/),
      'routing.yaml:3 (circuit_breakr): unknown key "circuit_breakr" ignored (did you mean "circuit_breaker"?)',
    ]);
  });

  it('rejects a deployment list that is not a list', () => {
    expect(problemsOf(() => parse('local_deployment: http://gpu:8000\n'))[0]).toMatch(
      /^routing\.yaml:1 \(local_deployment\): must be a list/,
    );
  });
});

describe('sameEndpoint', () => {
  it.each([
    ['http://localhost:8000/v1', 'http://localhost:8000'],
    ['http://localhost:8000/v1', 'http://localhost:8000/'],
    ['http://localhost:8000/v1/', 'http://localhost:8000'],
    ['http://LOCALHOST:8000/v1', 'http://localhost:8000/v1'],
    ['https://host/proxy/v1', 'https://host/proxy//'],
  ])('treats %s and %s as the same endpoint', (a, b) => {
    expect(sameEndpoint(a, b)).toBe(true);
  });

  it.each([
    ['http://localhost:8000', 'http://localhost:8001'],
    ['http://localhost:8000', 'https://localhost:8000'],
    ['http://host/a/v1', 'http://host/b/v1'],
  ])('tells %s and %s apart', (a, b) => {
    expect(sameEndpoint(a, b)).toBe(false);
  });

  it('normalises to scheme, host and path', () => {
    expect(normaliseEndpoint(' HTTP://Gpu-1:8000/v1/ ')).toBe('http://gpu-1:8000');
  });
});

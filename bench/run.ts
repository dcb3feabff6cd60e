// Load harness: measures, in one run on one machine, the instant stand-in upstream directly, a
// bare Node http + undici pass-through (the ceiling for Node), and the gateway with logging,
// metrics and the request log on. Each runs in its own process; this process generates load.
//
//   npm run bench                       # default durations
//   BENCH_SECONDS=5 npm run bench       # quicker
//   BENCH_ROUNDS=1 npm run bench        # one round per scenario instead of three
//   BENCH_DB=postgres npm run bench     # request log in the local PostgreSQL
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLoad, type LoadResult } from './load';
import { cpuMs, ROOT, rssMb, start, startGateway } from './procs';
import { directBodies, gatewayBodies, gatewayEnv, median, staggerMsOf, writeBenchModels, type Scenario } from './scenarios';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const RSS_REQUESTS = Number(process.env.BENCH_RSS_REQUESTS ?? 100_000);

const fmt = (n: number | undefined, d = 2) => (n === undefined || Number.isNaN(n) ? '-' : n.toFixed(d));

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'hi-bench-'));
  const upstream = await start('upstream', [join(__dirname, 'upstream-server.js')], {});
  const passthrough = await start('passthrough', [join(__dirname, 'passthrough-server.js')], { UPSTREAM_PORT: String(upstream.port) });
  writeBenchModels(work, upstream.port);
  const gatewayLog = join(work, 'gateway.log');
  const gateway = await startGateway(gatewayEnv(work, 'bench'), gatewayLog);

  const gateway2 = await startGateway(gatewayEnv(work, 'bench2', { WORKERS: '2' }), join(work, 'gateway2.log'));

  const targets = {
    upstream: { ...directBodies(upstream.port), pid: upstream.child.pid! },
    passthrough: { ...directBodies(passthrough.port), pid: passthrough.child.pid! },
    gateway: { ...gatewayBodies(gateway.port), pid: gateway.child.pid! },
    'gateway-2w': { ...gatewayBodies(gateway2.port), pid: gateway2.child.pid! },
  };
  type Target = keyof typeof targets;
  let gatewayRequests = 0;
  // Every scenario runs in ROUNDS rounds, the targets taking turns within each round, so that a
  // spell of host noise (these shared machines vary 1.2-4x between runs) falls on one round of
  // every target rather than on the whole of one. A scenario's figures are the medians over the
  // rounds; a comparison with the stand-in (added latency, share of the pass-through) is taken
  // within each round, between measurements seconds apart, and its median reported.
  const rounds: Record<string, Partial<Record<Target, LoadResult[]>>> = {};
  const results: Record<string, Partial<Record<Target, LoadResult>>> = {};
  const all: Target[] = ['upstream', 'passthrough', 'gateway', 'gateway-2w'];
  const run = async (scenario: string, list: Target[], body: Scenario, connections: number) => {
    const byTarget: Partial<Record<Target, LoadResult[]>> = (rounds[scenario] = {});
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of list) {
        const t = targets[name];
        const r = await runLoad({
          url: t.url,
          path: t.path,
          body: t[body],
          connections,
          seconds: SECONDS,
          warmupSeconds: round === 0 ? WARMUP : 0,
          staggerMs: staggerMsOf(body),
          stream: body !== 'json',
          cpuMs: () => cpuMs(t.pid),
        });
        (byTarget[name] ??= []).push(r);
        if (name === 'gateway') gatewayRequests += r.requests;
        process.stderr.write(
          `${scenario.padEnd(18)} ${`${round + 1}/${ROUNDS}`.padEnd(5)} ${name.padEnd(12)} ${fmt(r.rps, 0).padStart(7)} req/s  p50 ${fmt(r.p50)} ms  p90 ${fmt(r.p90)} ms  p99 ${fmt(r.p99)} ms  cpu ${fmt(r.cpuUsPerRequest, 0)} µs/req  errors ${r.errors}\n`,
        );
      }
    }
    results[scenario] = Object.fromEntries(Object.entries(byTarget).map(([name, rs]) => [name, medianResult(rs)]));
  };
  /** Per round, `f` of that round's results for the two targets; the median over the rounds and the range. */
  const paired = (scenario: string, a: Target, b: Target, f: (x: LoadResult, y: LoadResult) => number): Spread => {
    const xs = rounds[scenario][a] ?? [];
    const ys = rounds[scenario][b] ?? [];
    return spread(xs.map((x, i) => f(x, ys[i])));
  };

  await run('json@32', all, 'json', 32);
  await run('json@1', ['upstream', 'passthrough', 'gateway'], 'json', 1);
  await run('stream@100 paced', all, 'paced', 100);
  await run('stream@100 lockstep', all, 'lockstep', 100);
  await run('stream@100 flat-out', all, 'stream', 100);

  // Top the single-process gateway up to RSS_REQUESTS requests in all, then read its memory:
  // right as the load ends, and once settled (when V8 has given back the heap it grew for speed).
  while (gatewayRequests < RSS_REQUESTS) {
    const t = targets.gateway;
    const r = await runLoad({
      url: t.url,
      path: t.path,
      body: t.json,
      connections: 32,
      seconds: Math.min(30, Math.max(2, (RSS_REQUESTS - gatewayRequests) / 2500)),
    });
    gatewayRequests += r.requests + r.errors;
  }
  const rssAtEnd = rssMb(gateway.child.pid!, 'VmRSS');
  // V8's memory reducer hands the heap back some seconds after the load stops (seen: 10-40 s;
  // two readings 5 s apart can agree before it has run). Read every 5 s from 25 s on until the
  // figure has held still (within 1 MB) for 20 s, at most 120 s.
  await new Promise((r) => setTimeout(r, 25_000));
  let rssSettled = rssMb(gateway.child.pid!, 'VmRSS');
  for (let waited = 25_000, still = 0; waited < 120_000 && still < 4; waited += 5000) {
    await new Promise((r) => setTimeout(r, 5000));
    const now = rssMb(gateway.child.pid!, 'VmRSS');
    still = Math.abs(now - rssSettled) < 1 ? still + 1 : 0;
    rssSettled = now;
  }
  const rssPeak = rssMb(gateway.child.pid!, 'VmHWM');

  const rps32 = (name: Target) => spread((rounds['json@32'][name] ?? []).map((r) => r.rps));
  const summary = {
    machine: {
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      node: process.version,
      db: process.env.BENCH_DB === 'postgres' ? 'postgres' : 'sqlite',
    },
    seconds: SECONDS,
    rounds: ROUNDS,
    results,
    all_rounds: rounds,
    // Each target below: the median over the rounds, with the lowest and highest round.
    targets: {
      gateway_rps_at_32: rps32('gateway'),
      gateway_2w_rps_at_32: rps32('gateway-2w'),
      gateway_share_of_passthrough: paired('json@32', 'gateway', 'passthrough', (g, p) => g.rps / p.rps),
      gateway_2w_share_of_passthrough: paired('json@32', 'gateway-2w', 'passthrough', (g, p) => g.rps / p.rps),
      gateway_added_p50_ms_at_1: paired('json@1', 'gateway', 'upstream', (g, u) => g.p50 - u.p50),
      passthrough_added_p50_ms_at_1: paired('json@1', 'passthrough', 'upstream', (p, u) => p.p50 - u.p50),
      stream_added_ttft_p99_ms_at_100: paired('stream@100 paced', 'gateway', 'upstream', (g, u) => g.p99 - u.p99),
      stream_2w_added_ttft_p99_ms_at_100: paired('stream@100 paced', 'gateway-2w', 'upstream', (g, u) => g.p99 - u.p99),
      passthrough_added_ttft_p99_ms_at_100: paired('stream@100 paced', 'passthrough', 'upstream', (p, u) => p.p99 - u.p99),
      stream_added_ttft_p50_ms_at_100: paired('stream@100 paced', 'gateway', 'upstream', (g, u) => g.p50 - u.p50),
      lockstep_added_ttft_p99_ms_at_100: paired('stream@100 lockstep', 'gateway', 'upstream', (g, u) => g.p99 - u.p99),
      lockstep_2w_added_ttft_p99_ms_at_100: paired('stream@100 lockstep', 'gateway-2w', 'upstream', (g, u) => g.p99 - u.p99),
      lockstep_passthrough_added_ttft_p99_ms_at_100: paired('stream@100 lockstep', 'passthrough', 'upstream', (p, u) => p.p99 - u.p99),
      gateway_requests_total: gatewayRequests,
      gateway_rss_mb_at_end: rssAtEnd,
      gateway_rss_mb_settled: rssSettled,
      gateway_rss_mb_peak: rssPeak,
    },
  };
  const t = summary.targets;
  const pctf = (x: number) => `${fmt(x * 100, 1)}%`;
  const range = (x: Spread, show: (n: number) => string) => `${show(x.median)} (${show(x.min)} to ${show(x.max)})`;
  const ms = (n: number) => `${n >= 0 ? '+' : ''}${fmt(n, 3)} ms`;
  const lines = [
    '',
    `machine: ${summary.machine.cpus} x ${summary.machine.cpu}, node ${summary.machine.node}, request log in ${summary.machine.db}, ${ROUNDS} rounds of ${SECONDS} s per scenario and target, medians`,
    '',
    '| scenario | target | req/s | p50 ms | p90 ms | p99 ms | CPU µs/req | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...Object.entries(results).flatMap(([sc, byTarget]) =>
      Object.entries(byTarget).map(
        ([name, r]) =>
          `| ${sc}${sc.startsWith('stream') ? ' (TTFT)' : ''} | ${name} | ${fmt(r.rps, 0)} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.cpuUsPerRequest, 0)} | ${r.errors} |`,
      ),
    ),
    '',
    `Targets: median over the ${ROUNDS} rounds (lowest to highest round in brackets).`,
    '',
    `| target | goal | 1 process | 2 workers |`,
    `|---|---|---|---|`,
    `| throughput, JSON, 32 connections | >= 3000 req/s | ${range(t.gateway_rps_at_32, (n) => fmt(n, 0))} | ${range(t.gateway_2w_rps_at_32, (n) => fmt(n, 0))} |`,
    `| share of the bare pass-through | >= 25% | ${range(t.gateway_share_of_passthrough, pctf)} | ${range(t.gateway_2w_share_of_passthrough, pctf)} |`,
    `| added p50 latency, 1 connection | <= 1 ms | ${range(t.gateway_added_p50_ms_at_1, ms)} (pass-through adds ${ms(t.passthrough_added_p50_ms_at_1.median)}) | |`,
    `| added TTFT p99, 100 paced streams | <= 2 ms | ${range(t.stream_added_ttft_p99_ms_at_100, ms)} (pass-through adds ${ms(t.passthrough_added_ttft_p99_ms_at_100.median)}) | ${range(t.stream_2w_added_ttft_p99_ms_at_100, ms)} |`,
    `| (added TTFT p50, 100 paced streams) | | ${range(t.stream_added_ttft_p50_ms_at_100, ms)} | |`,
    `| (added TTFT p99, 100 streams in lockstep) | | ${range(t.lockstep_added_ttft_p99_ms_at_100, ms)} (pass-through adds ${ms(t.lockstep_passthrough_added_ttft_p99_ms_at_100.median)}) | ${range(t.lockstep_2w_added_ttft_p99_ms_at_100, ms)} |`,
    `| RSS after ${t.gateway_requests_total} requests | <= 150 MB | ${fmt(t.gateway_rss_mb_settled, 1)} MB settled (${fmt(t.gateway_rss_mb_at_end, 1)} at end of load, peak ${fmt(t.gateway_rss_mb_peak, 1)}) | |`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench/results/latest.json'), JSON.stringify(summary, null, 2));

  for (const p of [gateway, gateway2, passthrough, upstream]) p.child.kill('SIGTERM');
}

interface Spread {
  median: number;
  min: number;
  max: number;
}

function spread(xs: number[]): Spread {
  const s = xs.filter((x) => !Number.isNaN(x));
  return { median: median(s), min: s.length ? Math.min(...s) : NaN, max: s.length ? Math.max(...s) : NaN };
}

/** A target's figures over its rounds: each field's median (requests and errors: totals). */
function medianResult(rs: LoadResult[]): LoadResult {
  const m = (k: keyof LoadResult) => median(rs.map((r) => r[k] as number).filter((v) => v !== undefined));
  const optional = (k: keyof LoadResult) => (rs.some((r) => r[k] !== undefined) ? m(k) : undefined);
  return {
    requests: rs.reduce((a, r) => a + r.requests, 0),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    seconds: rs.reduce((a, r) => a + r.seconds, 0),
    rps: m('rps'),
    p50: m('p50'),
    p90: m('p90'),
    p99: m('p99'),
    totalP50: optional('totalP50'),
    totalP99: optional('totalP99'),
    cpuUsPerRequest: optional('cpuUsPerRequest'),
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

// Interleaved A/B of gateway builds or settings: one scenario, the variants taking turns within
// every round (the order reversed each round) with the stand-in measured directly in the same
// round as the reference. On these shared hosts a figure moves by ±25% within minutes and up to
// 2x between days, so a change is judged by how often it wins round against round, not by two
// separate full runs.
//
//   AB_VARIANTS='[{"name":"base"},{"name":"semi64","nodeArgs":["--max-semi-space-size=64"]}]' npm run bench:ab
//   AB_VARIANTS='[{"name":"main"},{"name":"branch","root":"/tmp/wt"}]' AB_SCENARIO=json npm run bench:ab
//
// A variant: `name`; `root`, another checkout whose built `dist/` runs (default: this one);
// `nodeArgs`, flags for node; `env`, environment on top of the bench's. Settings: AB_SCENARIO
// (paced, json, stream = flat-out, lockstep; default paced), AB_ROUNDS (8), AB_SECONDS (8),
// AB_CONNECTIONS (100 for streams, 32 for JSON), AB_TOKENS (paced answers all this long instead
// of 10-30 tokens: the slope of CPU per stream between two lengths is the cost per chunk),
// AB_PASSTHROUGH=1 (the bare Node pass-through measured in every round too: the Node ceiling).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLoad, type LoadResult } from './load';
import { cpuTimes, rssMb, start, startGateway, type Proc } from './procs';
import { directBodies, gatewayBodies, gatewayEnv, median, staggerMsOf, writeBenchModels, type Bodies, type Scenario } from './scenarios';

interface Variant {
  name: string;
  root?: string;
  nodeArgs?: string[];
  env?: Record<string, string>;
}

interface Round extends LoadResult {
  /** `cpuUsPerRequest` split: user (JavaScript, GC) and system (syscalls, the kernel's TCP). */
  userUs: number;
  systemUs: number;
}

const SCENARIOS: Scenario[] = ['paced', 'json', 'stream', 'lockstep'];

function settings() {
  const scenario = (process.env.AB_SCENARIO ?? 'paced') as Scenario;
  if (!SCENARIOS.includes(scenario)) throw new Error(`AB_SCENARIO must be one of ${SCENARIOS.join(', ')}`);
  let variants: Variant[];
  try {
    variants = JSON.parse(process.env.AB_VARIANTS ?? '') as Variant[];
  } catch {
    throw new Error('AB_VARIANTS must be a JSON array of {name, root?, nodeArgs?, env?}');
  }
  if (!Array.isArray(variants) || variants.length < 1 || variants.some((v) => typeof v?.name !== 'string')) {
    throw new Error('AB_VARIANTS must be a JSON array of {name, root?, nodeArgs?, env?}');
  }
  const tokens = process.env.AB_TOKENS ? Number(process.env.AB_TOKENS) : undefined;
  return {
    scenario,
    variants,
    rounds: Math.max(1, Number(process.env.AB_ROUNDS ?? 8)),
    seconds: Number(process.env.AB_SECONDS ?? 8),
    connections: Number(process.env.AB_CONNECTIONS ?? (scenario === 'json' ? 32 : 100)),
    tokens: tokens && tokens > 0 ? tokens : undefined,
    passthrough: process.env.AB_PASSTHROUGH === '1',
  };
}

const f = (n: number, d = 2) => (Number.isNaN(n) ? '-' : n.toFixed(d));

async function main(): Promise<void> {
  const s = settings();
  const work = mkdtempSync(join(tmpdir(), 'hi-ab-'));
  const upstream = await start('upstream', [join(__dirname, 'upstream-server.js')], {});
  writeBenchModels(work, upstream.port);
  const targets: Array<{ name: string; proc: Proc; bodies: Bodies }> = [
    { name: 'upstream', proc: upstream, bodies: directBodies(upstream.port, s.tokens) },
  ];
  if (s.passthrough) {
    const passthrough = await start('passthrough', [join(__dirname, 'passthrough-server.js')], { UPSTREAM_PORT: String(upstream.port) });
    targets.push({ name: 'passthrough', proc: passthrough, bodies: directBodies(passthrough.port, s.tokens) });
  }
  for (const [i, v] of s.variants.entries()) {
    // No idle collection unless a variant asks: the order of turns leaves some variants idle past
    // IDLE_GC_AFTER_MS between rounds and others not, and a collected heap costs ~20% more CPU
    // while it grows again (bench/README, twelfth session).
    const env = { IDLE_GC_AFTER_MS: '0', ...v.env };
    const proc = await startGateway(gatewayEnv(work, `v${i}`, env), join(work, `v${i}.log`), { root: v.root, nodeArgs: v.nodeArgs });
    targets.push({ name: v.name, proc, bodies: gatewayBodies(proc.port, s.tokens) });
  }
  process.stdout.write(`${s.scenario}, ${s.connections} connections, ${s.rounds} rounds of ${s.seconds} s; logs in ${work}\n`);
  const results = new Map<string, Round[]>(targets.map((t) => [t.name, []]));
  try {
    for (let round = 0; round < s.rounds; round++) {
      for (const t of round % 2 ? [...targets].reverse() : targets) {
        const pid = t.proc.child.pid!;
        // runLoad reads the CPU time as the measured period starts and as it ends.
        const marks: Array<{ user: number; system: number }> = [];
        const r = await runLoad({
          url: t.bodies.url,
          path: t.bodies.path,
          body: t.bodies[s.scenario],
          connections: s.connections,
          seconds: s.seconds,
          warmupSeconds: round === 0 ? 2 : 0,
          staggerMs: staggerMsOf(s.scenario),
          stream: s.scenario !== 'json',
          cpuMs: () => {
            const c = cpuTimes(pid);
            marks.push(c);
            return c.user + c.system;
          },
        });
        const per = (k: 'user' | 'system') =>
          marks.length === 2 && r.requests > 0 ? ((marks[1][k] - marks[0][k]) * 1000) / r.requests : NaN;
        const x: Round = { ...r, userUs: per('user'), systemUs: per('system') };
        results.get(t.name)!.push(x);
        process.stdout.write(
          `round ${round + 1} ${t.name.padEnd(14)} ${f(x.rps, 0).padStart(6)} req/s  p50 ${f(x.p50)}  p90 ${f(x.p90)}  p99 ${f(x.p99)} ms  ` +
            `CPU ${f(x.cpuUsPerRequest ?? NaN, 0)} µs/req (user ${f(x.userUs, 0)}, system ${f(x.systemUs, 0)})  errors ${x.errors}  ` +
            `RSS ${f(rssMb(pid, 'VmRSS'), 0)} MB (peak ${f(rssMb(pid, 'VmHWM'), 0)})\n`,
        );
      }
    }
  } finally {
    for (const t of targets) t.proc.child.kill('SIGTERM');
  }
  const lines = [
    '',
    '| target | req/s | p50 ms | p99 ms | mean p99 ms | CPU µs/req | user | system | vs first variant |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const base = results.get(s.variants[0].name)!;
  for (const t of targets) {
    const rs = results.get(t.name)!;
    const m = (k: keyof Round) => median(rs.map((r) => r[k] as number));
    let versus = '';
    if (t.name !== 'upstream' && t.name !== 'passthrough' && rs !== base) {
      const p99 = rs.filter((r, i) => r.p99 < base[i].p99).length;
      const cpu = rs.filter((r, i) => (r.cpuUsPerRequest ?? NaN) < (base[i].cpuUsPerRequest ?? NaN)).length;
      versus = `lower p99 in ${p99}/${rs.length} rounds, lower CPU in ${cpu}/${rs.length}`;
    }
    const meanP99 = rs.reduce((a, r) => a + r.p99, 0) / rs.length;
    lines.push(
      `| ${t.name} | ${f(m('rps'), 0)} | ${f(m('p50'))} | ${f(m('p99'))} | ${f(meanP99)} | ${f(m('cpuUsPerRequest'), 0)} | ${f(m('userUs'), 0)} | ${f(m('systemUs'), 0)} | ${versus} |`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

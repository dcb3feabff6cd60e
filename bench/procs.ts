// Starting and watching the processes a benchmark measures: helpers that print "READY <port>",
// the built gateway, and their memory and CPU time from /proc. Shared by run.ts and ab.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../../..'); // bench/dist/bench -> repository root

export interface Proc {
  child: ChildProcess;
  port: number;
}

/** Every process started here, stopped should the harness itself be stopped (Ctrl-C, kill). */
const children = new Set<ChildProcess>();
let stopOnSignal = false;

function track(child: ChildProcess): void {
  if (!stopOnSignal) {
    stopOnSignal = true;
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        for (const c of children) c.kill('SIGTERM');
        process.exit(130);
      });
    }
  }
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Starts a helper process that prints "READY <port>". */
export function start(name: string, cmd: string[], env: Record<string, string>): Promise<Proc> {
  return new Promise((resolvePort, reject) => {
    const child = spawn(process.execPath, cmd, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    track(child);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${out}`)), 30_000);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const ready = /READY (\d+)/.exec(out);
      if (ready) {
        clearTimeout(timer);
        child.stdout.removeAllListeners('data');
        child.stdout.resume();
        resolvePort({ child, port: Number(ready[1]) });
      }
    });
    child.on('exit', (code) => code && reject(new Error(`${name} exited with ${code}:\n${out}`)));
  });
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * Starts the built gateway with its JSON logs going straight to a file, as in production: piping
 * them through this process would let the load generator's busy event loop throttle the gateway.
 * `root`: the checkout whose `dist/` runs (another build, for an A/B); `nodeArgs`: flags for node.
 */
export async function startGateway(
  env: Record<string, string>,
  logFile: string,
  opts: { root?: string; nodeArgs?: string[] } = {},
): Promise<Proc> {
  const root = opts.root ?? ROOT;
  const port = await freePort();
  const fd = openSync(logFile, 'w');
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), join(root, 'dist/main.js')], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', fd, fd],
  });
  track(child);
  closeSync(fd);
  const until = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${readFileSync(logFile, 'utf8')}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return { child, port };
    } catch {
      // not listening yet
    }
    if (Date.now() > until) throw new Error(`gateway did not start:\n${readFileSync(logFile, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function rssMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/**
 * CPU time (user + system, ms) of a process and its direct children (the workers of a
 * `WORKERS=2` gateway), from /proc: a steadier figure than latency on a shared, noisy host.
 */
export function cpuMs(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/** `cpuMs` split into user and system time (ms): JavaScript and GC against syscalls and the kernel. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const read = (p: string | number): [number, number, number] | undefined => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      return [Number(f[1]), Number(f[11]) * 10, Number(f[12]) * 10]; // ppid; utime, stime at 100 ticks/s
    } catch {
      return undefined; // gone
    }
  };
  const own = read(pid);
  const t = { user: own?.[1] ?? 0, system: own?.[2] ?? 0 };
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = read(name);
    if (s && s[0] === pid) {
      t.user += s[1];
      t.system += s[2];
    }
  }
  return t;
}

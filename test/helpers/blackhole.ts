import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

/**
 * A host whose TCP connections never complete, as one that drops SYNs behaves: a listener in a
 * stopped process (which cannot accept) whose backlog is full, so that the kernel drops every
 * further connection attempt and the caller waits for its connect timeout.
 */
export async function startBlackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      "require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, function () { console.log(this.address().port) })",
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(String(line).trim());
  child.kill('SIGSTOP');
  const fill: Socket[] = [];
  for (let i = 0; i < 10; i++) fill.push(connect(port, '127.0.0.1').on('error', () => undefined));
  await new Promise((r) => setTimeout(r, 200));
  return {
    port,
    async close() {
      for (const s of fill) s.destroy();
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

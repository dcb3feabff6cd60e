import { startGateway } from '../helpers/gateway';
import { TcpProxy } from '../helpers/tcp-proxy';
import { RedisService } from '../../src/redis/redis.service';

async function waitUntil(ok: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 2 }]\n';

describe('Redis connection', () => {
  it('reports a reachable Redis (the local server) as shared state', async () => {
    const gw = await startGateway({ models: MODELS, env: { REDIS_URL: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0' } });
    try {
      const health = await (await fetch(`${gw.url}/health`)).json();
      expect(health).toMatchObject({ status: 'ok', info: { redis: { status: 'up', mode: 'shared' } } });
    } finally {
      await gw.close();
    }
  });

  it('serves on per-process state when Redis is unreachable, and says so', async () => {
    const gw = await startGateway({ models: MODELS, env: { REDIS_URL: 'redis://127.0.0.1:9/0' } });
    try {
      const res = await gw.client().chat.completions.create({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] });
      expect(res.choices[0].message.content).toBe('Hello from');
      const health = await fetch(`${gw.url}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'degraded', details: { redis: { status: 'degraded', mode: 'per-process' } } });
    } finally {
      await gw.close();
    }
  });

  it('answers /health at once while Redis holds the connection without answering', async () => {
    const target = new URL(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0');
    const proxy = new TcpProxy(target.hostname, Number(target.port || 6379));
    const port = await proxy.start();
    const gw = await startGateway({ models: MODELS, env: { REDIS_URL: `redis://127.0.0.1:${port}${target.pathname}` } });
    try {
      expect(await (await fetch(`${gw.url}/health`)).json()).toMatchObject({ info: { redis: { status: 'up' } } });
      proxy.hold();
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const health = await fetch(`${gw.url}/health`);
        expect(Date.now() - started).toBeLessThan(1000);
        expect(await health.json()).toMatchObject({
          details: { redis: { status: 'degraded', message: expect.stringContaining('no answer') } },
        });
      }
    } finally {
      proxy.release();
      await gw.close();
      await proxy.stop();
    }
  });

  it('stays up when a command sent on a lost connection times out after the new one is ready', async () => {
    const target = new URL(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0');
    const proxy = new TcpProxy(target.hostname, Number(target.port || 6379));
    const port = await proxy.start();
    const gw = await startGateway({
      models: MODELS,
      env: { REDIS_URL: `redis://127.0.0.1:${port}${target.pathname}`, REDIS_COMMAND_TIMEOUT_MS: '800' },
    });
    try {
      const redis = gw.app.get(RedisService);
      await waitUntil(() => redis.status === 'ready');
      // In flight when the connection is cut; not sent again on the next one, it times out there.
      const lost = redis.client!.blpop('hyi-test:nothing', 0.5).catch((err: unknown) => err);
      await new Promise((r) => setTimeout(r, 50));
      await proxy.stop();
      await proxy.start();
      await waitUntil(() => redis.status === 'ready');
      const err = await lost;
      redis.noteFailure(err);
      expect(redis.status).toBe('ready');
    } finally {
      await gw.close();
      await proxy.stop();
    }
  });

  it('needs nothing without REDIS_URL', async () => {
    const gw = await startGateway({ models: MODELS });
    try {
      expect(await (await fetch(`${gw.url}/health`)).json()).toMatchObject({
        status: 'ok',
        info: { redis: { status: 'up', mode: expect.stringContaining('per-process') } },
      });
    } finally {
      await gw.close();
    }
  });
});

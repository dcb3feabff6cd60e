import { startGateway } from '../helpers/gateway';

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

import { startGateway, type TestGateway } from '../helpers/gateway';

const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 2 }]\n';

/** The request context (request id, caller) must survive reading the body, for JSON and streams alike. */
describe('request context', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway({ models: MODELS });
  });
  afterAll(() => gw.close());

  it('uses the x-request-id of the response as the generation id and the api_logs id', async () => {
    for (const stream of [false, true]) {
      const res = await fetch(`${gw.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'demo/mock', stream, messages: [{ role: 'user', content: 'x' }] }),
      });
      const requestId = res.headers.get('x-request-id');
      const text = await res.text();
      expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(text).toContain(`"id":"gen-${requestId}"`);
      const rows = await gw.rows();
      expect(rows.map((r) => r.id)).toContain(requestId);
    }
  });
});

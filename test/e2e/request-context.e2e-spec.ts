import { startGateway, type TestGateway } from '../helpers/gateway';

const MODELS = 'models:\n  - id: demo/mock\n    context_length: 4096\n    route: [{ kind: mock, tokens: 2 }]\n';

/** The request context (request id, caller) must survive reading the body, for JSON and streams alike. */
describe('request context', () => {
  let gw: TestGateway;
  const logLines: string[] = [];
  beforeAll(async () => {
    gw = await startGateway({ models: MODELS, logLines, env: { LOG_LEVEL: 'info' } });
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

  it("keeps the client's own x-request-id beside the gateway's, in the access log and the row", async () => {
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'my-client-id-123' },
      body: JSON.stringify({ model: 'demo/mock', messages: [{ role: 'user', content: 'x' }] }),
    });
    const id = res.headers.get('x-request-id')!;
    expect(id).not.toBe('my-client-id-123');
    await res.text();
    const row = (await gw.rows()).find((r) => r.id === id)!;
    expect(row.metadata).toMatchObject({ client_request_id: 'my-client-id-123' });
    const access = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === id && l.status !== undefined);
    expect(access).toMatchObject({ client_request_id: 'my-client-id-123' });
  });
});

import { capStoredJson, type TruncatedContent } from './stored-content';

describe('capStoredJson', () => {
  it('keeps a body that fits as it is', () => {
    const json = JSON.stringify({ messages: [{ role: 'user', content: 'é'.repeat(300) }] });
    expect(capStoredJson(json, Buffer.byteLength(json))).toBe(json);
  });

  it('keeps the head of a larger body, marked, within the limit in UTF-8 bytes', () => {
    for (const unit of ['a', 'é', '€', '😀', '"', '\n', '\u0001']) {
      const json = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: unit.repeat(5000) }] });
      const capped = capStoredJson(json, 4096);
      expect(Buffer.byteLength(capped)).toBeLessThanOrEqual(4096);
      const stored = JSON.parse(capped) as TruncatedContent;
      expect(stored.truncated).toBe(true);
      expect(stored.bytes).toBe(Buffer.byteLength(json));
      expect(json.startsWith(stored.head)).toBe(true);
      // Not much less than the limit: the head is only shrunk as far as needed.
      expect(Buffer.byteLength(capped)).toBeGreaterThan(3000);
    }
  });

  it('never ends the head on half of a surrogate pair', () => {
    const json = JSON.stringify('😀'.repeat(2000));
    for (let limit = 1024; limit < 1040; limit++) {
      const { head } = JSON.parse(capStoredJson(json, limit)) as TruncatedContent;
      expect(head).not.toMatch(/[\ud800-\udbff]$/);
    }
  });
});

import { COUNTED_FROM, HELD_TEXT_LIMIT, HeldText, HeldTextLimit, heldInAll } from './held-text';
import { SseDecoder } from './sse';

describe('HeldText', () => {
  it('counts large holdings across holders, refuses the one that takes them past the limit, and frees on release', () => {
    const a = new HeldText();
    const b = new HeldText();
    const before = heldInAll();
    expect(a.add(COUNTED_FROM - 1)).toBe(true);
    // Small holdings are not counted at all.
    expect(heldInAll()).toBe(before);
    expect(a.add(HELD_TEXT_LIMIT - COUNTED_FROM)).toBe(true);
    expect(heldInAll()).toBe(before + HELD_TEXT_LIMIT - 1);
    expect(b.add(COUNTED_FROM)).toBe(false);
    // The refused one holds nothing; the other keeps what it held.
    expect(b.size).toBe(0);
    expect(heldInAll()).toBe(before + HELD_TEXT_LIMIT - 1);
    a.release();
    expect(heldInAll()).toBe(before);
    expect(b.add(COUNTED_FROM)).toBe(true);
    b.release();
  });

  it('fails a stream whose unfinished event would take what the process holds past the limit', () => {
    const others = new HeldText();
    others.add(HELD_TEXT_LIMIT - COUNTED_FROM);
    try {
      const sse = new SseDecoder();
      const big = `data: ${'y'.repeat(2 * COUNTED_FROM)}`;
      expect(() => sse.push(big)).toThrow(HeldTextLimit);
      others.release();
      // With room again an event as large goes through, and once complete it holds nothing.
      const next = new SseDecoder();
      expect(next.push(big)).toEqual([]);
      expect(next.push('\n\n')).toEqual([{ data: 'y'.repeat(2 * COUNTED_FROM), event: undefined, id: undefined }]);
      expect(heldInAll()).toBe(0);
      next.push(big);
      expect(heldInAll()).toBeGreaterThan(0);
      next.close();
      expect(heldInAll()).toBe(0);
    } finally {
      others.release();
    }
  });
});

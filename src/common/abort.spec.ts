import { UpstreamError } from './errors';
import { raceAbort } from './abort';

describe('raceAbort', () => {
  it('resolves with the value when the promise settles first', async () => {
    await expect(raceAbort(Promise.resolve(42), new AbortController().signal)).resolves.toBe(42);
  });

  it('rejects with the promise error when the promise fails first', async () => {
    const boom = new Error('boom');
    await expect(raceAbort(Promise.reject(boom), new AbortController().signal)).rejects.toBe(boom);
  });

  it('rejects with the abort reason when the signal aborts first', async () => {
    const controller = new AbortController();
    const reason = new UpstreamError({ failure: 'timeout', message: 'too slow' });
    const raced = raceAbort(new Promise<never>(() => undefined), controller.signal);
    controller.abort(reason);
    await expect(raced).rejects.toBe(reason);
  });

  it('rejects at once when the signal has already aborted', async () => {
    const controller = new AbortController();
    const reason = new Error('gone');
    controller.abort(reason);
    await expect(raceAbort(new Promise<never>(() => undefined), controller.signal)).rejects.toBe(reason);
  });

  it('ignores an abort after the promise has settled', async () => {
    const controller = new AbortController();
    const raced = raceAbort(Promise.resolve('done'), controller.signal);
    await expect(raced).resolves.toBe('done');
    controller.abort(new Error('late'));
    await expect(raced).resolves.toBe('done');
  });
});

describe('raceAbort options', () => {
  it('returns the promise itself without a signal', async () => {
    const p = Promise.resolve(1);
    expect(raceAbort(p, undefined)).toBe(p);
    await expect(raceAbort(p, undefined)).resolves.toBe(1);
  });

  it("rejects with the given reason instead of the signal's", async () => {
    const controller = new AbortController();
    controller.abort(new Error('signal reason'));
    await expect(raceAbort(new Promise<never>(() => undefined), controller.signal, () => new Error('mine'))).rejects.toThrow('mine');
  });

  it('ignores the late failure of a promise raced against an aborted signal', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const controller = new AbortController();
      controller.abort(new Error('gone'));
      let fail!: (e: Error) => void;
      const late = new Promise<never>((_, reject) => (fail = reject));
      await expect(raceAbort(late, controller.signal)).rejects.toThrow('gone');
      fail(new Error('late'));
      await new Promise((r) => setTimeout(r, 20));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

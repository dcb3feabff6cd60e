import { isDataError, isOutage } from './request-log.writer';

const coded = (code: string, message = 'failed', Kind: ErrorConstructor = Error) => Object.assign(new Kind(message), { code });

describe('isOutage: the database state, never a row', () => {
  it('counts connection, resource and operator failures', () => {
    for (const err of [
      coded('ECONNREFUSED'),
      coded('EPIPE'),
      coded('EAI_AGAIN'),
      coded('57P01'),
      coded('53300'),
      coded('08006'),
      coded('25006'),
      coded('SQLITE_BUSY'),
      new Error('Connection terminated unexpectedly'),
      new Error('Query read timeout'),
    ])
      expect([err.message, isOutage(err)]).toEqual([err.message, true]);
  });

  it("does not count a row's own failure, whatever its message says", () => {
    for (const err of [
      coded('ERR_OUT_OF_RANGE', 'The value of "offset" is out of range', RangeError),
      coded('ERR_INVALID_ARG_TYPE', 'The "chunk" argument must be a string', TypeError),
      coded('23514', 'new row violates check constraint "api_logs_timeout_check"'),
      coded('P0001', 'trigger says: connection budget exceeded'),
      coded('SQLITE_CONSTRAINT_NOTNULL'),
      new TypeError('SQLite3 can only bind numbers, strings, bigints, buffers, and null'),
    ])
      expect([err.message, isOutage(err)]).toEqual([err.message, false]);
  });

  it('leaves data errors to isDataError', () => {
    expect(isDataError(coded('ERR_OUT_OF_RANGE', 'too long', RangeError))).toBe(true);
    expect(isDataError(coded('23514'))).toBe(true);
  });
});

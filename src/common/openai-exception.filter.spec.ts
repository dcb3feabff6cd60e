import type { ArgumentsHost } from '@nestjs/common';
import type { IncomingMessage } from 'node:http';
import type { AppLogger } from '../observability/app-logger';
import { OpenAiExceptionFilter } from './openai-exception.filter';
import { attachContext } from './request-context';

describe('OpenAiExceptionFilter', () => {
  it('logs a bug with the request id its 500 names, so that the stack can be found by it', () => {
    const error = jest.fn();
    const filter = new OpenAiExceptionFilter({ pino: { error } } as unknown as AppLogger);
    const req = { path: '/admin/stats', method: 'GET' } as unknown as IncomingMessage;
    attachContext(req, { requestId: 'req-123', startedAt: 0 });
    let sent: unknown;
    const res = {
      headersSent: false,
      status: () => res,
      setHeader: () => res,
      json: (b: unknown) => (sent = b),
      end: () => res,
      writableEnded: false,
    };
    const host = { switchToHttp: () => ({ getRequest: () => req, getResponse: () => res }) } as unknown as ArgumentsHost;
    const boom = new TypeError('Cannot read properties of undefined');
    filter.catch(boom, host);
    expect(error).toHaveBeenCalledWith(expect.objectContaining({ reqId: 'req-123', err: boom }), expect.stringContaining('req-123'));
    expect(JSON.stringify(sent ?? '')).not.toContain('Cannot read');
  });
});

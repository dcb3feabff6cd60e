import { Logger } from '@nestjs/common';
import { HealthCheckLogger } from './health-check.logger';

describe('HealthCheckLogger', () => {
  it('warns once per change of what fails, not for every failing probe', () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      const logger = new HealthCheckLogger();
      const failed = (queued: number, degraded: Array<{ model: string; route: string }>) =>
        `Health Check has failed! ${JSON.stringify({
          database: { status: 'up', queued },
          routing: { status: degraded.length ? 'down' : 'up', degraded_endpoints: degraded },
        })}`;
      const one = [{ model: 'm', route: 'a' }];
      logger.error(failed(0, one));
      logger.error(failed(3, one)); // the same failure, other figures
      logger.error(failed(7, one));
      expect(warn).toHaveBeenCalledTimes(1);
      logger.error(failed(7, [...one, { model: 'm', route: 'b' }]));
      expect(warn).toHaveBeenCalledTimes(2);
      expect(warn.mock.calls[1][0]).toContain('"route":"b"');
      // The same failure is told again after five minutes (it may have recovered and come back meanwhile).
      const now = Date.now();
      const clock = jest.spyOn(Date, 'now').mockReturnValue(now + 5 * 60_000 + 1);
      try {
        logger.error(failed(7, [...one, { model: 'm', route: 'b' }]));
        expect(warn).toHaveBeenCalledTimes(3);
      } finally {
        clock.mockRestore();
      }
    } finally {
      warn.mockRestore();
    }
  });
});

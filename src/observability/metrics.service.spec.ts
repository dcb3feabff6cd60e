import 'reflect-metadata';
import { AppConfig } from '../config/app-config';
import { validateEnv } from '../config/env.schema';
import { MetricsService } from './metrics.service';

describe('MetricsService.counterOf', () => {
  it('exposes a running total kept elsewhere as a counter, with its value at each scrape', async () => {
    const metrics = new MetricsService(new AppConfig(validateEnv({})));
    let total = 0;
    metrics.counterOf('test_rows_total', 'Rows since start', () => total);
    const scrape = async () =>
      (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('test_rows_total') || l.includes(' test_rows_total '));

    expect(await scrape()).toEqual(['# HELP test_rows_total Rows since start', '# TYPE test_rows_total counter', 'test_rows_total 0']);
    total = 7;
    expect(await scrape()).toContain('test_rows_total 7');
    total = 12;
    // The value read, not added to the last scrape's.
    expect(await scrape()).toContain('test_rows_total 12');
  });
});

import { Controller, Get, NotFoundException, Res } from '@nestjs/common';
import type { Response } from 'express';
import { MetricsService } from '../observability/metrics.service';

@Controller('metrics')
export class MetricsController {
  constructor(private readonly metrics: MetricsService) {}

  @Get()
  async scrape(@Res() res: Response): Promise<void> {
    if (!this.metrics.enabled) throw new NotFoundException('metrics are disabled (METRICS_ENABLED=false)');
    const { text, contentType } = await this.metrics.scrape();
    res.setHeader('content-type', contentType);
    res.end(text);
  }
}

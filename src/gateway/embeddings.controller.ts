import { Controller, HttpCode, Post, Req, Res, UseGuards } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ApiKeyGuard } from './api-key.guard';
import { EmbeddingsService } from './embeddings.service';

@Controller('v1')
@UseGuards(ApiKeyGuard)
export class EmbeddingsController {
  constructor(private readonly embeddings: EmbeddingsService) {}

  @Post('embeddings')
  @HttpCode(200)
  async create(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.embeddings.handle(req, res);
  }
}

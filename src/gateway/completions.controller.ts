import { Controller, HttpCode, Post, Req, Res, UseGuards } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ApiKeyGuard } from './api-key.guard';
import { TextCompletionService } from './text-completion.service';

/** OpenAI's legacy text completions; writes its own response (JSON or SSE), like chat. */
@Controller('v1')
@UseGuards(ApiKeyGuard)
export class CompletionsController {
  constructor(private readonly completions: TextCompletionService) {}

  @Post('completions')
  @HttpCode(200)
  async create(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.completions.handle(req, res);
  }
}

import { Controller, HttpCode, Post, Req, Res, UseGuards } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ChatCompletionService } from './chat-completion.service';
import { ApiKeyGuard } from './api-key.guard';

@Controller('v1/chat')
@UseGuards(ApiKeyGuard)
export class ChatCompletionsController {
  constructor(private readonly chat: ChatCompletionService) {}

  /** Writes its own response (JSON or SSE), so no interceptor ever buffers a stream. */
  @Post('completions')
  @HttpCode(200)
  async create(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.chat.handle(req, res);
  }
}

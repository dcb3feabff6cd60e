import { Controller, HttpCode, Post, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ChatCompletionService } from './chat-completion.service';

@Controller('v1/chat')
export class ChatCompletionsController {
  constructor(private readonly chat: ChatCompletionService) {}

  /** Writes its own response (JSON or SSE), so no interceptor ever buffers a stream. */
  @Post('completions')
  @HttpCode(200)
  async create(@Req() req: Request, @Res() res: Response): Promise<void> {
    await this.chat.handle(req, res);
  }
}

import { Module } from '@nestjs/common';
import { AdaptersModule } from '../../../src/adapters/adapters.module';
import { OllamaChatAdapter } from './ollama-chat.adapter';

/**
 * The whole provider: the adapter class, provided by a module that imports AdaptersModule for
 * the shared HTTP pools and key pool. The registry finds `@LlmAdapter` classes in any module.
 */
@Module({
  imports: [AdaptersModule],
  providers: [OllamaChatAdapter],
})
export class OllamaChatModule {}

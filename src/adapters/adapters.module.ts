import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { AdapterRegistry } from './adapter-registry.service';
import { AnthropicAdapter } from './anthropic/anthropic.adapter';
import { GeminiAdapter } from './gemini/gemini.adapter';
import { KeyPool } from './http/key-pool.service';
import { UpstreamClient } from './http/upstream-client.service';
import { MockAdapter } from './mock/mock.adapter';
import { OpenAiCompatAdapter } from './openai-compat/openai-compat.adapter';
import { OpenRouterAdapter } from './openrouter/openrouter.adapter';
import { GoogleTokenSource } from './vertex-claude/google-auth';
import { VertexClaudeAdapter } from './vertex-claude/vertex-claude.adapter';

/**
 * Wire protocols. Each adapter is a provider marked `@LlmAdapter`; a platform team adds one by
 * providing its class from any module — the registry discovers it at start-up.
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    AdapterRegistry,
    UpstreamClient,
    KeyPool,
    GoogleTokenSource,
    OpenAiCompatAdapter,
    OpenRouterAdapter,
    AnthropicAdapter,
    VertexClaudeAdapter,
    GeminiAdapter,
    MockAdapter,
  ],
  exports: [AdapterRegistry, UpstreamClient, KeyPool, GoogleTokenSource],
})
export class AdaptersModule {}

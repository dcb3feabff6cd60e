import { Injectable } from '@nestjs/common';
import type { RouteDef } from '../../config/registry.types';
import { KeyPool } from '../http/key-pool.service';
import { optionString } from '../http/upstream-call';
import { UpstreamClient } from '../http/upstream-client.service';
import { LlmAdapter } from '../llm-adapter';
import { OpenAiCompatAdapter } from '../openai-compat/openai-compat.adapter';
import type { OpenAiCompatProfile } from '../openai-compat/openai-compat.profiles';
import { openRouterBody, openRouterHeaders } from './openrouter.mapper';

export const OPENROUTER_API = 'https://openrouter.ai/api/v1';

/**
 * OpenRouter's own request features the gateway does not act on (web search and other plugins,
 * middle-out compression) go to it; the client's `provider` too, for its policy preferences
 * (openRouterBody keeps those and nothing the gateway's own routing decided).
 */
const PROFILE: OpenAiCompatProfile = {
  name: 'openrouter',
  healthPath: 'models',
  dropFields: [],
  passFields: ['plugins', 'transforms', 'provider', 'session_id'],
};

/**
 * OpenRouter: OpenAI's protocol plus app attribution headers (`http_referer`, `x_title` route
 * options), usage accounting (the cost it reports lands in `api_logs.upstream_cost_usd`) and,
 * with `kind: openrouter[slug]`, one pinned sub-provider without fallbacks.
 */
@Injectable()
@LlmAdapter({ kind: 'openrouter', options: ['provider', 'plugins', 'http_referer', 'x_title'] })
export class OpenRouterAdapter extends OpenAiCompatAdapter {
  readonly openRouterExtras = true;

  constructor(http: UpstreamClient, keys: KeyPool) {
    super(http, keys);
  }

  override validateRoute(route: RouteDef): string[] {
    const problems: string[] = [];
    const p = route.options.provider;
    if (p !== undefined && (typeof p !== 'object' || p === null || Array.isArray(p)))
      problems.push(`${route.where}: provider must be a mapping of OpenRouter provider preferences (e.g. {sort: price})`);
    const plugins = route.options.plugins;
    if (plugins !== undefined && typeof plugins !== 'boolean') problems.push(`${route.where}: plugins must be true or false`);
    return problems;
  }

  protected override baseUrl(route: RouteDef): string {
    return route.baseUrl ?? OPENROUTER_API;
  }

  protected override profile(): OpenAiCompatProfile {
    return PROFILE;
  }

  protected override finishBody(body: Record<string, unknown>, route: RouteDef, path: string): Record<string, unknown> {
    return openRouterBody(body, route, path !== 'embeddings');
  }

  protected override headers(route: RouteDef, key: string | undefined, stream: boolean): Record<string, string> {
    return openRouterHeaders(super.headers(route, key, stream), optionString(route, 'http_referer'), optionString(route, 'x_title'));
  }
}

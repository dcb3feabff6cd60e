import { Injectable, type OnApplicationBootstrap, type OnModuleInit } from '@nestjs/common';
import { AdapterRegistry } from '../adapters/adapter-registry.service';
import type { Request, Response } from 'express';
import { protocolError, unsupported } from '../adapters/http/upstream-call';
import { ANSWER_TOO_LARGE } from '../adapters/http/upstream-client.service';
import type { ChatRequest } from '../common/chat.types';
import {
  embeddingInputs,
  embeddingsProblem,
  encodeEmbeddings,
  type EmbeddingsRequest,
  type EmbeddingsResponse,
} from '../common/embedding.types';
import { UpstreamError } from '../common/errors';
import { clientUsage, isTokenCount, providerBilling } from '../common/usage';
import { estimateTextTokens } from '../common/tokens';
import { AppConfig } from '../config/app-config';
import { ModelRegistry, type RegistrySnapshot } from '../config/model-registry.service';
import { Execution, RouteExecutor } from '../routing/route-executor.service';
import { validateEmbeddingsRequest } from './embeddings-request.validator';
import { dearest, promptCharge } from './charge-estimate';
import { GatewayCalls } from './gateway-call.service';
import { generationId } from './request-record';

/**
 * Serves POST /v1/embeddings: validate, resolve an embedding model, run its routes (failing over
 * like chat), answer in OpenAI's shape with the embeddings encoded as the client asked (floats,
 * or base64 as the OpenAI SDKs ask by default), and log usage — estimated, and marked so, when
 * the provider reports none (Gemini).
 */
@Injectable()
export class EmbeddingsService implements OnModuleInit, OnApplicationBootstrap {
  constructor(
    private readonly calls: GatewayCalls,
    private readonly executor: RouteExecutor,
    private readonly adapters: AdapterRegistry,
    private readonly registry: ModelRegistry,
    private readonly config: AppConfig,
  ) {}

  onModuleInit(): void {
    this.registry.addValidator((s) => this.validate(s));
  }

  onApplicationBootstrap(): void {
    const problems = this.validate(this.registry.current());
    if (problems.length > 0) throw new Error(`configuration refused:\n  ${problems.join('\n  ')}`);
  }

  /** An embedding model whose route cannot embed is a config error, found at load time. */
  validate(snapshot: RegistrySnapshot): string[] {
    const problems: string[] = [];
    for (const model of snapshot.models) {
      if (model.type !== 'embedding') continue;
      for (const route of model.routes) {
        const adapter = this.adapters.get(route.kind);
        if (adapter && (!adapter.embed || adapter.canEmbed?.(route) === false)) {
          problems.push(`${route.where}: model "${model.id}" has type: embedding, but route kind ${route.kind} cannot compute embeddings`);
        }
      }
    }
    return problems;
  }

  async handle(req: Request, res: Response): Promise<void> {
    await this.calls.handle(req, res, 'embeddings', async (scope) => {
      const body = validateEmbeddingsRequest(req.body);
      const { rec } = scope;
      // Answered as one JSON body whatever `stream` said (the validator drops it).
      rec.stream = false;
      rec.body = body;
      rec.userId = typeof body.user === 'string' ? body.user : null;
      const model = this.calls.resolveModel(scope, body.model, 'embedding');
      // Strategies plan on the request's routing fields; embeddings have no messages.
      const view: ChatRequest = { ...body, model: body.model, messages: [] };
      const ex = new Execution(model, view, rec.id, scope.signal, scope.snapshot);
      const models = this.executor.models(ex);
      const tokens = embeddingInputs(body.input).reduce((n, x) => n + (typeof x === 'string' ? estimateTextTokens(x) : x.length), 0);
      // Billed should the client leave once the upstream has the inputs (see Execution.accepted).
      rec.promptEstimate = tokens;
      await this.calls.admit(scope, res, () => dearest(models.map((m) => promptCharge(m, tokens))));
      rec.execution = ex;
      const out = await this.executor.run(
        ex,
        (adapter, route, ctx) => {
          if (!adapter.embed) return Promise.reject(unsupported(`route ${route.id} (${route.kind}) cannot compute embeddings`, 'model'));
          return adapter.embed(body, route, ctx).then(
            (answer) => {
              // Before it counts as served: a broken answer is the route's failure, and the next one may serve.
              const problem = embeddingsProblem(answer, embeddingInputs(body.input).length);
              if (problem) throw protocolError(route, problem);
              return answer;
            },
            (e: unknown) => {
              throw e instanceof UpstreamError && e.code === ANSWER_TOO_LARGE ? this.tooLarge(e, body) : e;
            },
          );
        },
        'headers',
      );
      rec.answered();
      // The gateway's own id (the one /v1/generation looks up) and route kind, as chat answers
      // have them; the upstream's id stays in the row.
      if (typeof out.id === 'string' && out.id) rec.upstreamId ??= out.id.slice(0, 200);
      out.id = generationId(rec.id);
      if (ex.route) out.provider = ex.route.kind;
      // Under the model that made the vectors (a `models` fallback's, if it served): vectors of
      // different models cannot be compared.
      rec.usageEstimated = this.present(out, body.encoding_format ?? 'float', ex.model.id, body.input);
      rec.usage = {
        prompt_tokens: out.usage!.prompt_tokens,
        completion_tokens: 0,
        total_tokens: out.usage!.total_tokens,
        ...providerBilling(out.usage!),
      };
      out.usage = { ...clientUsage(out.usage!), cost: rec.costUsd() };
      this.calls.sendJson(res, out);
    });
  }

  /**
   * An answer over UPSTREAM_BODY_LIMIT. Its size is the request's: inputs × dimensions of one
   * model, which every route serves: 2,048 inputs of 3,072 dimensions (OpenAI's largest batch of
   * text-embedding-3-large) come to 81 MB of JSON with 8-digit floats, 135 MB with each float32
   * written in full (as Python floats are), and 34 MB as base64. The next route would compute and
   * bill it only to fail the same way, so it ends the request at once and says how to get the
   * embeddings.
   */
  private tooLarge(err: UpstreamError, body: EmbeddingsRequest): UpstreamError {
    const ways = [
      'send fewer inputs per request',
      ...(body.encoding_format === 'base64' ? [] : ['ask for encoding_format "base64" (under half the size)']),
      "raise the gateway's UPSTREAM_BODY_LIMIT",
    ];
    return new UpstreamError({
      failure: err.failure,
      code: ANSWER_TOO_LARGE,
      message:
        `upstream ${err.route} answered more than ${this.config.env.UPSTREAM_BODY_LIMIT} (UPSTREAM_BODY_LIMIT): the embeddings ` +
        `asked for are that large on every route, so no other was tried. To get them, ${ways.slice(0, -1).join(', ')} or ${ways.at(-1)}`,
      provider: err.provider,
      route: err.route,
      gatewayFault: true,
      sameOnEveryRoute: true,
    });
  }

  /** The answer as the client sees it; true when its usage had to be estimated. */
  private present(
    out: EmbeddingsResponse,
    format: 'float' | 'base64',
    model: string,
    input: Parameters<typeof embeddingInputs>[0],
  ): boolean {
    encodeEmbeddings(out, format);
    // OpenAI's shape: each item with its input's index, in input order, whatever order (or
    // lack of index) the upstream answered in.
    if (out.data.every((d) => typeof d.index === 'number')) out.data.sort((a, b) => a.index - b.index);
    else out.data.forEach((d, i) => (d.index = i));
    out.object = 'list';
    out.model = model;
    const u = out.usage;
    if (u && isTokenCount(u.prompt_tokens)) {
      if (!isTokenCount(u.total_tokens)) u.total_tokens = u.prompt_tokens;
      return false;
    }
    const prompt = embeddingInputs(input).reduce((s, x) => s + (typeof x === 'string' ? estimateTextTokens(x) : x.length), 0);
    out.usage = { prompt_tokens: prompt, total_tokens: prompt };
    return true;
  }
}

import { Controller, Get, Req, UseGuards, UseInterceptors } from '@nestjs/common';
import type { Request } from 'express';
import { AuthenticationError } from '../common/errors';
import { picoToUsd, usdToPico } from '../common/money';
import { startOfUtcDay, startOfUtcMonth } from '../common/principal';
import { contextOf } from '../common/request-context';
import { ApiKeysService } from '../storage/api-keys.service';
import { DatabaseOutageInterceptor } from '../storage/database-outage';
import type { ApiKey } from '../storage/entities/api-key.entity';
import { StatsRepository } from '../storage/stats.repository';
import { ApiKeyGuard, presentedKeys } from './api-key.guard';

const DAY_MS = 86_400_000;

/**
 * GET /v1/key (and OpenRouter's older /v1/auth/key): the key the request carries, in OpenRouter's
 * current-key shape, so that tools that show a key's spend and limit against OpenRouter show it
 * against the gateway. `usage*` is the cost logged under the key (its requests' `cost_usd`),
 * all time and in the current UTC day, week (from Monday) and month. `limit` is the key's budget:
 * the monthly one, or the daily one when only that is set or when less of it is left.
 */
@Controller('v1')
@UseGuards(ApiKeyGuard)
@UseInterceptors(DatabaseOutageInterceptor)
export class KeyInfoController {
  constructor(
    private readonly keys: ApiKeysService,
    private readonly logs: StatsRepository,
  ) {}

  @Get(['key', 'auth/key'])
  async get(@Req() req: Request) {
    const principal = contextOf(req)?.principal;
    if (!principal) {
      // With USER_AUTH_ENABLED=false a token that is no key of ours is let through anonymously.
      if (presentedKeys(req).length > 0) throw new AuthenticationError('The API key is not valid', 'invalid_api_key');
      throw new AuthenticationError(
        'GET /v1/key describes the API key a request carries; send Authorization: Bearer <key>',
        'missing_api_key',
      );
    }
    const key = await this.keys.get(principal.id);
    const now = Date.now();
    const [all, day, week, month] = await Promise.all(
      [new Date(0), startOfUtcDay(now), startOfUtcWeek(now), startOfUtcMonth(now)].map((since) => this.logs.spendSince(key.id, since)),
    );
    const limit = bindingBudget(key, day, month);
    return {
      data: {
        label: `${key.key_prefix}...`,
        name: key.name,
        limit: limit ? usd(limit.budget) : null,
        limit_reset: limit?.reset ?? null,
        limit_remaining: limit ? usd(limit.remaining) : null,
        usage: usd(all),
        usage_daily: usd(day),
        usage_weekly: usd(week),
        usage_monthly: usd(month),
        byok_usage: 0,
        byok_usage_daily: 0,
        byok_usage_weekly: 0,
        byok_usage_monthly: 0,
        include_byok_in_limit: false,
        is_free_tier: false,
        is_provisioning_key: false,
        is_management_key: false,
        expires_at: key.expires_at ? new Date(key.expires_at).toISOString() : null,
        // Fields of OpenRouter's shape that the gateway has nothing for, as OpenRouter sends them
        // when unset: its SDK checks the response and refuses one without them.
        allowed_data_regions: ['global'],
        creator_user_id: null,
        organization_id: null,
        workspace_id: null,
        // No free-model quota here: -1, OpenRouter's word for no such limit (as in rate_limit).
        free_model_daily_requests: { limit: -1, remaining: -1, used: 0 },
        // OpenRouter marks this field deprecated (requests -1); here it is the key's own per-minute limit.
        rate_limit: {
          requests: key.rpm_limit ?? -1,
          interval: '1m',
          note: "Deprecated by OpenRouter; here the key's rpm_limit (-1: none). See limits.",
        },
        // The gateway's own limits, in the admin API's terms.
        limits: {
          rpm_limit: key.rpm_limit,
          tpm_limit: key.tpm_limit,
          max_concurrency: key.max_concurrency,
          daily_budget_usd: budgetText(key.daily_budget_usd),
          monthly_budget_usd: budgetText(key.monthly_budget_usd),
        },
      },
    };
  }
}

interface Binding {
  budget: bigint;
  remaining: bigint;
  reset: 'daily' | 'monthly';
}

/** The budget that runs out first: least left, monthly on a tie (it frees later). */
function bindingBudget(key: ApiKey, dayPico: bigint, monthPico: bigint): Binding | undefined {
  const candidates: Binding[] = [];
  if (key.monthly_budget_usd !== null) candidates.push(binding(key.monthly_budget_usd, monthPico, 'monthly'));
  if (key.daily_budget_usd !== null) candidates.push(binding(key.daily_budget_usd, dayPico, 'daily'));
  return candidates.reduce<Binding | undefined>((best, b) => (!best || b.remaining < best.remaining ? b : best), undefined);
}

function binding(budgetUsd: string, spentPico: bigint, reset: Binding['reset']): Binding {
  const budget = usdToPico(budgetUsd);
  return { budget, remaining: budget > spentPico ? budget - spentPico : 0n, reset };
}

/** Monday 00:00 UTC of the week `ms` falls in. */
function startOfUtcWeek(ms: number): Date {
  const day = startOfUtcDay(ms);
  const sinceMonday = (day.getUTCDay() + 6) % 7;
  return new Date(day.getTime() - sinceMonday * DAY_MS);
}

/** USD as OpenRouter sends it: a JSON number (15 significant digits, so exact below $1,000). */
function usd(pico: bigint): number {
  return Number(picoToUsd(pico));
}

function budgetText(v: string | null): string | null {
  return v === null ? null : picoToUsd(usdToPico(v));
}

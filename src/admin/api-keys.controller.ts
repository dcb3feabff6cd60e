import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, UseGuards, UsePipes, UseInterceptors } from '@nestjs/common';
import { InvalidRequestError } from '../common/errors';
import { picoToUsd, usdToPico } from '../common/money';
import { toDate } from '../storage/api-log-rollup';
import { DatabaseOutageInterceptor } from '../storage/database-outage';
import { ApiKeysService, type ApiKeyInput } from '../storage/api-keys.service';
import type { ApiKey, ListedKeyStatus } from '../storage/entities/api-key.entity';
import { AdminAuditInterceptor } from './admin-audit.interceptor';
import { AdminGuard } from './admin.guard';
import { AdminValidationPipe } from './admin-validation.pipe';
import { CreateApiKeyDto, ListApiKeysQuery, UpdateApiKeyDto } from './dto/api-key.dto';
import { parseTimestamp, usdText } from './dto/validators';

/**
 * API keys for clients. The secret (`key`) is in the answer to creation and regeneration only;
 * afterwards a key is known by its id and its display prefix.
 */
@Controller('admin/api-keys')
@UseGuards(AdminGuard)
@UsePipes(AdminValidationPipe)
@UseInterceptors(DatabaseOutageInterceptor, AdminAuditInterceptor)
export class ApiKeysController {
  constructor(private readonly keys: ApiKeysService) {}

  @Post()
  @HttpCode(201)
  async create(@Body() body: CreateApiKeyDto) {
    const { key, secret } = await this.keys.create({ ...toInput(body), name: body.name });
    return { ...presentKey(key), key: secret };
  }

  @Get()
  async list(@Query() q: ListApiKeysQuery) {
    if (q.cursor !== undefined && q.offset !== 0) throw new InvalidRequestError('send either cursor or offset, not both', 'offset');
    const { data, total, next_cursor } = await this.keys.list({ status: q.status, limit: q.limit, offset: q.offset, cursor: q.cursor });
    return {
      object: 'list',
      data: data.map(presentKey),
      total,
      limit: q.limit,
      offset: q.cursor === undefined ? q.offset : null,
      has_more: next_cursor !== null,
      next_cursor,
    };
  }

  @Get(':id')
  async get(@Param('id') id: string) {
    return presentKey(await this.keys.get(id));
  }

  @Patch(':id')
  async update(@Param('id') id: string, @Body() body: UpdateApiKeyDto) {
    const input = toInput(body);
    if (Object.keys(input).length === 0) {
      throw new InvalidRequestError(
        'Nothing to change: send at least one of name, rpm_limit, tpm_limit, max_concurrency, daily_budget_usd, monthly_budget_usd, expires_at, notes, status',
        'body',
      );
    }
    return presentKey(await this.keys.update(id, input));
  }

  @Post(':id/revoke')
  @HttpCode(200)
  async revoke(@Param('id') id: string) {
    return presentKey(await this.keys.revoke(id));
  }

  /** Same as POST :id/revoke: keys are never deleted, so their history keeps its owner. */
  @Delete(':id')
  async remove(@Param('id') id: string) {
    return presentKey(await this.keys.revoke(id));
  }

  @Post(':id/regenerate')
  @HttpCode(200)
  async regenerate(@Param('id') id: string) {
    const { key, secret } = await this.keys.regenerate(id);
    return { ...presentKey(key), key: secret };
  }
}

function toInput(body: CreateApiKeyDto | UpdateApiKeyDto): ApiKeyInput {
  const out: ApiKeyInput = {};
  if (body.name !== undefined) out.name = body.name;
  for (const k of ['rpm_limit', 'tpm_limit', 'max_concurrency'] as const) if (body[k] !== undefined) out[k] = body[k];
  for (const k of ['daily_budget_usd', 'monthly_budget_usd'] as const) {
    const v = body[k];
    if (v !== undefined) out[k] = v === null ? null : usdText(v);
  }
  if (body.expires_at !== undefined) out.expires_at = body.expires_at === null ? null : (parseTimestamp(body.expires_at) ?? null);
  if (body.notes !== undefined) out.notes = body.notes;
  if ('status' in body && body.status !== undefined) out.status = body.status;
  return out;
}

function money(v: string | number | null): string | null {
  if (v === null || v === undefined) return null;
  try {
    return picoToUsd(usdToPico(v));
  } catch {
    return String(v);
  }
}

function iso(d: Date | string | null): string | null {
  return d === null || d === undefined ? null : toDate(d).toISOString();
}

/** An active key past its expires_at is refused (401 api_key_expired): listed as `expired`. */
function listedStatus(k: ApiKey): ListedKeyStatus {
  return k.status === 'active' && k.expires_at !== null && toDate(k.expires_at).getTime() <= Date.now() ? 'expired' : k.status;
}

export function presentKey(k: ApiKey) {
  return {
    id: k.id,
    object: 'api_key',
    name: k.name,
    prefix: k.key_prefix,
    status: listedStatus(k),
    rpm_limit: k.rpm_limit,
    tpm_limit: k.tpm_limit,
    max_concurrency: k.max_concurrency,
    daily_budget_usd: money(k.daily_budget_usd),
    monthly_budget_usd: money(k.monthly_budget_usd),
    expires_at: iso(k.expires_at),
    notes: k.notes,
    created_at: iso(k.created_at),
    updated_at: iso(k.updated_at),
    revoked_at: iso(k.revoked_at),
  };
}

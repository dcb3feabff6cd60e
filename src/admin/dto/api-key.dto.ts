import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min, MinLength, ValidateIf } from 'class-validator';
import { LISTED_KEY_STATUSES, type ListedKeyStatus } from '../../storage/entities/api-key.entity';
import { IsFuture, IsTimestamp, IsUsdAmount, QueryInteger } from './validators';

const INT_MAX = 2_147_483_647;

/** The limits and notes of a key, as both creation and update accept them. */
abstract class ApiKeySettingsDto {
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(INT_MAX)
  rpm_limit?: number | null;

  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(INT_MAX)
  tpm_limit?: number | null;

  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(INT_MAX)
  max_concurrency?: number | null;

  @IsOptional()
  @IsUsdAmount()
  daily_budget_usd?: string | number | null;

  @IsOptional()
  @IsUsdAmount()
  monthly_budget_usd?: string | number | null;

  @IsOptional()
  @IsTimestamp()
  @IsFuture()
  expires_at?: string | number | null;

  @IsOptional()
  @IsString()
  @MaxLength(4000)
  notes?: string | null;
}

/** POST /admin/api-keys. Limits left out (or null) do not apply. */
export class CreateApiKeyDto extends ApiKeySettingsDto {
  @IsString()
  @MinLength(1)
  @MaxLength(200)
  name!: string;
}

/** PATCH /admin/api-keys/:id: only the fields sent change; null removes a limit. */
export class UpdateApiKeyDto extends ApiKeySettingsDto {
  @ValidateIf((o: UpdateApiKeyDto) => o.name !== undefined)
  @IsString()
  @MinLength(1)
  @MaxLength(200)
  name?: string;

  @ValidateIf((o: UpdateApiKeyDto) => o.status !== undefined)
  @IsIn(['active', 'suspended'], { message: 'status must be "active" or "suspended" (revoke with POST /admin/api-keys/:id/revoke)' })
  status?: 'active' | 'suspended';
}

/** GET /admin/api-keys */
export class ListApiKeysQuery {
  @IsOptional()
  @IsIn(LISTED_KEY_STATUSES)
  status?: ListedKeyStatus;

  @QueryInteger()
  @IsInt()
  @Min(1)
  @Max(500)
  limit = 50;

  @QueryInteger()
  @IsInt()
  @Min(0)
  @Max(INT_MAX)
  offset = 0;

  /** The previous page's `next_cursor` (stable while keys are created, unlike `offset`). */
  @IsOptional()
  @IsString()
  @MaxLength(500)
  cursor?: string;
}

import { IsIn, IsInt, IsOptional, IsString, Matches, Max, MaxLength, Min } from 'class-validator';
import { STATS_GROUPS, type StatsGroup } from '../../storage/stats.repository';
import { IsTimestamp, QueryInteger } from './validators';

/** GET /admin/stats: from (default: 24 hours before `to`), to (default: now), group_by. */
export class StatsQuery {
  @IsOptional()
  @IsTimestamp()
  from?: string;

  @IsOptional()
  @IsTimestamp()
  to?: string;

  @IsIn(STATS_GROUPS)
  group_by: StatsGroup = 'model';
}

/** GET /admin/requests: filters (key id, model, status, time range) and a page. */
export class RequestsQuery {
  @IsOptional()
  @IsTimestamp()
  from?: string;

  @IsOptional()
  @IsTimestamp()
  to?: string;

  @IsOptional()
  @IsString()
  @MaxLength(64)
  key?: string;

  @IsOptional()
  @IsString()
  @MaxLength(200)
  model?: string;

  @IsOptional()
  @Matches(/^([1-5]\d\d|success|error|cancelled)$/, {
    message: 'status must be an HTTP status (200, 429, ...), "success", "error" or "cancelled"',
  })
  status?: string;

  @QueryInteger()
  @IsInt()
  @Min(1)
  @Max(500)
  limit = 50;

  @IsOptional()
  @IsString()
  @MaxLength(500)
  cursor?: string;
}

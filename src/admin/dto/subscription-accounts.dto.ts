import { ValidationPipe, type ArgumentMetadata, type ValidationError } from '@nestjs/common';
import { refuseReservedKeys } from '../admin-validation.pipe';
import { ArrayMaxSize, ArrayMinSize, IsArray, IsIn, IsObject, IsOptional, IsString, Length, MinLength, ValidateIf } from 'class-validator';
import { InvalidRequestError } from '../../common/errors';
import { SUBSCRIPTION_PROVIDERS, type SubscriptionProvider } from '../../subscription/subscription.types';

/** POST /admin/accounts: one login, in the flat form of the import files. */
export class AddAccountDto {
  @IsIn(SUBSCRIPTION_PROVIDERS)
  provider!: SubscriptionProvider;

  @IsString()
  @Length(1, 200)
  name!: string;

  @IsString()
  @MinLength(1)
  access_token!: string;

  @IsString()
  @MinLength(1)
  refresh_token!: string;

  /** Epoch milliseconds or an ISO date. Codex reads it from the access token when absent. */
  @IsOptional()
  @ValidateIf((o: AddAccountDto) => typeof o.expires_at !== 'number')
  @IsString({ message: 'expires_at must be epoch milliseconds or an ISO date string' })
  expires_at?: number | string;

  /** Codex: the login's OpenID token (optional). */
  @IsOptional()
  @IsString()
  id_token?: string;

  /** Codex: the ChatGPT account id; read from the tokens when absent. */
  @IsOptional()
  @IsString()
  @Length(1, 200)
  account_id?: string;

  @IsOptional()
  @IsString()
  @Length(1, 320)
  email?: string;
}

/** POST /admin/accounts/import: entries as in claude_accounts.json / codex_accounts.json. */
export class ImportAccountsDto {
  @IsIn(SUBSCRIPTION_PROVIDERS)
  provider!: SubscriptionProvider;

  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(1000)
  @IsObject({ each: true, message: 'each of accounts must be an object' })
  accounts!: Record<string, unknown>[];
}

/** Nest's ValidationPipe, after the check for names class-transformer drops (`__proto__`, ...). */
class AccountBodyPipe extends ValidationPipe {
  override transform(value: unknown, meta: ArgumentMetadata): Promise<unknown> {
    // Else a null or a list is read as an empty object, and answered with every field missing.
    if (meta.type === 'body' && (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)))
      throw new InvalidRequestError('The request body must be a JSON object', 'body');
    refuseReservedKeys(value, 'request body');
    return super.transform(value, meta);
  }
}

/** Validates admin bodies: unknown fields and bad values are one 400 naming every field, in the OpenAI error shape. */
export const adminBody = new AccountBodyPipe({
  whitelist: true,
  forbidNonWhitelisted: true,
  transform: true,
  exceptionFactory: (errors: ValidationError[]) => {
    const messages = flatten(errors);
    return new InvalidRequestError(
      messages.length ? `Invalid request body: ${messages.join('; ')}` : 'Invalid request body: expected a JSON object',
      errors[0]?.property ?? null,
    );
  },
});

function flatten(errors: ValidationError[], prefix = ''): string[] {
  return errors.flatMap((e) => [
    ...Object.values(e.constraints ?? {}).map((m) => (prefix ? `${prefix}.${m}` : m)),
    ...flatten(e.children ?? [], prefix ? `${prefix}.${e.property}` : e.property),
  ]);
}

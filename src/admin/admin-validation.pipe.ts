import { Injectable, type ArgumentMetadata, type PipeTransform } from '@nestjs/common';
import { plainToInstance } from 'class-transformer';
import { validateSync, type ValidationError } from 'class-validator';
import { InvalidRequestError } from '../common/errors';

const PLAIN = new Set<unknown>([String, Number, Boolean, Array, Object]);

/**
 * Validates admin bodies and query strings against their DTO classes (class-validator). Bad input
 * is a 400 in OpenAI's shape whose message lists every field error; unknown fields are errors too,
 * so a misspelt limit never passes silently.
 */
@Injectable()
export class AdminValidationPipe implements PipeTransform {
  transform(value: unknown, meta: ArgumentMetadata): unknown {
    const type = meta.metatype;
    if (!type || PLAIN.has(type) || (meta.type !== 'body' && meta.type !== 'query')) return value;
    const where = meta.type === 'body' ? 'request body' : 'query';
    if (meta.type === 'body' && (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value))) {
      throw new InvalidRequestError('The request body must be a JSON object', 'body');
    }
    const dto = plainToInstance<object, unknown>(type as new () => object, value ?? {}, { exposeDefaultValues: true });
    const errors = validateSync(dto, { whitelist: true, forbidNonWhitelisted: true, forbidUnknownValues: true });
    if (errors.length > 0) {
      const fields = flatten(errors);
      throw new InvalidRequestError(
        `Invalid ${where}: ${fields.map((f) => f.message).join('; ')}`,
        [...new Set(fields.map((f) => f.field))].join(', '),
        'invalid_request',
      );
    }
    return dto;
  }
}

function flatten(errors: ValidationError[], parent = ''): Array<{ field: string; message: string }> {
  const out: Array<{ field: string; message: string }> = [];
  for (const e of errors) {
    const field = parent ? `${parent}.${e.property}` : e.property;
    for (const message of Object.values(e.constraints ?? {})) out.push({ field, message });
    if (e.children?.length) out.push(...flatten(e.children, field));
  }
  return out;
}

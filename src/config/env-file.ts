import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'dotenv';

/**
 * The variables the gateway starts with: an `.env` file's, under the process environment's (a
 * variable set in the environment wins over the file). The one reader of `.env`: for the
 * validated config (AppConfigModule), and for what main.ts must know before Nest boots (WORKERS:
 * how many processes there are), which it once read from the process environment alone, so that
 * `WORKERS=2` in `.env` started one process. A missing file is no error (every variable is optional).
 */
export function startupEnv(envFile?: string | false, env: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
  return { ...readEnvFile(envFile), ...env };
}

/**
 * The variables of an `.env` file (dotenv's syntax, as @nestjs/config parses it), by default the
 * one in the working directory; none when there is no such file or `envFile` is false.
 */
export function readEnvFile(envFile?: string | false): Record<string, string> {
  if (envFile === false) return {};
  const path = envFile || '.env';
  return existsSync(path) ? parse(readFileSync(path)) : {};
}

import { Global, Module, type DynamicModule } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { AppConfig } from './app-config';
import { startupEnv } from './env-file';
import { validateEnv } from './env.schema';
import { CONFIG_VARS, ModelRegistry } from './model-registry.service';

export interface AppConfigOptions {
  /** Values that take precedence over the process environment (tests, embedding). */
  overrides?: Record<string, string | undefined>;
  /** `.env` files to read; false to read none. Default: `.env` in the working directory. */
  envFile?: string | false;
}

const VALIDATED = 'HYBRID_ENV';
const VARS = 'HYBRID_VARS';

/**
 * The environment (validated once, at boot) and the YAML model registry. Shared infrastructure
 * rather than a feature, so global.
 */
@Global()
@Module({})
export class AppConfigModule {
  static forRoot(options: AppConfigOptions = {}): DynamicModule {
    const overrides = Object.fromEntries(Object.entries(options.overrides ?? {}).filter(([, v]) => v !== undefined));
    return {
      module: AppConfigModule,
      imports: [
        ConfigModule.forRoot({
          // The file is read by our own reader, which main.ts uses too (env-file.ts); `raw` is
          // then the process environment, which wins over the file.
          ignoreEnvFile: true,
          // Wrapped in one key so that @nestjs/config does not write defaults back into
          // process.env, which would leak between gateways sharing a process (tests).
          // The raw variables (.env merged with the process environment) are kept for `${VAR}`
          // expansion in the YAML files.
          validate: (raw) => {
            const vars = { ...startupEnv(options.envFile, raw as NodeJS.ProcessEnv), ...overrides };
            return { [VALIDATED]: validateEnv(vars), [VARS]: vars };
          },
        }),
      ],
      providers: [
        { provide: AppConfig, inject: [ConfigService], useFactory: (cs: ConfigService) => new AppConfig(cs.getOrThrow(VALIDATED)) },
        { provide: CONFIG_VARS, inject: [ConfigService], useFactory: (cs: ConfigService) => cs.get(VARS) },
        ModelRegistry,
      ],
      exports: [AppConfig, CONFIG_VARS, ModelRegistry],
    };
  }
}

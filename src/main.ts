import { Logger } from '@nestjs/common';
import { createApp } from './app.factory';
import { AppConfig } from './config/app-config';

async function bootstrap(): Promise<void> {
  const app = await createApp();
  const config = app.get(AppConfig);
  await app.listen(config.env.PORT, config.env.HOST);
  const url = await app.getUrl();
  new Logger('Gateway').log(`HybridInference listening on ${url.replace('[::1]', 'localhost')} (database: ${config.dbBackend})`);
}

bootstrap().catch((err: unknown) => {
  // Config errors name the file, line and key; print them plainly for the person starting us.
  process.stderr.write(`HybridInference failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

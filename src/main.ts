import cluster from 'node:cluster';
import { Logger } from '@nestjs/common';
import { createApp } from './app.factory';
import { runPrimary, workerCount } from './cluster';
import { AppConfig } from './config/app-config';
import { startupEnv } from './config/env-file';

async function serve(): Promise<void> {
  const app = await createApp();
  const config = app.get(AppConfig);
  await app.listen(config.env.PORT, config.env.HOST);
  const url = (await app.getUrl()).replace('[::1]', 'localhost');
  const who = cluster.isWorker ? `worker ${process.pid}` : 'HybridInference';
  new Logger('Gateway').log(`${who} listening on ${url} (database: ${config.dbBackend})`);
}

function fail(err: unknown): never {
  // Config errors name the file, line and key; print them plainly for the person starting us.
  process.stderr.write(`HybridInference failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

// WORKERS is read before anything else boots: it decides how many processes there are. From
// `.env` too, read as the validated config reads it (the environment wins).
let workers = 1;
try {
  workers = workerCount(startupEnv().WORKERS);
} catch (err) {
  fail(err);
}

if (workers > 1 && cluster.isPrimary) {
  runPrimary(workers, (msg) =>
    process.stdout.write(
      `${JSON.stringify({ level: 'info', time: new Date().toISOString(), service: 'hybridinference', context: 'Cluster', msg })}\n`,
    ),
  );
} else {
  serve().catch(fail);
}

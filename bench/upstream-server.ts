// The instant stand-in upstream, in its own process so it does not share an event loop with
// what is measured. Prints "READY <port>".
import { OpenAiUpstream } from '../test/fixtures/openai-upstream';

async function main(): Promise<void> {
  const upstream = new OpenAiUpstream({ record: false });
  const url = await upstream.start(Number(process.env.PORT ?? 0));
  process.stdout.write(`READY ${new URL(url).port}\n`);
}
void main();

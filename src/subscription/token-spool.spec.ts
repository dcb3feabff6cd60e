import 'reflect-metadata';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppConfig } from '../config/app-config';
import { validateEnv } from '../config/env.schema';
import { TokenSpool, type SpooledTokens } from './token-spool';

describe('TokenSpool', () => {
  let dir: string;
  let spool: TokenSpool;
  const entry: SpooledTokens = {
    id: 'a1',
    provider: 'claude',
    name: 'main',
    sealed: 'v1.sealed',
    expiresAt: null,
    fromVersion: 3,
    toVersion: 4,
  };
  /** A partial file as `write` leaves it when its process dies before the rename, `ageMs` old. */
  const leftover = (name: string, text: string, ageMs: number) => {
    const path = join(dir, `subscription-tokens-${name}.tmp`);
    writeFileSync(path, text, { mode: 0o600 });
    const when = (Date.now() - ageMs) / 1000;
    utimesSync(path, when, when);
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'hi-token-spool-'));
    spool = new TokenSpool(new AppConfig(validateEnv({ REQUEST_LOG_SPOOL_DIR: dir })));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes back a whole file its process wrote but did not rename, sets aside a cut one, and leaves one being written', async () => {
    const written = await spool.write([entry]);
    leftover('111-whole', JSON.stringify({ tokens: [entry] }), 120_000);
    leftover('222-cut', '{"tokens": [{"id": "a1", "prov', 120_000);
    leftover('333-young', JSON.stringify({ tokens: [entry] }), 1_000);
    const files = await spool.files();
    expect(files.sort()).toEqual([written, join(dir, 'subscription-tokens-111-whole.json')].sort());
    expect(await spool.read(join(dir, 'subscription-tokens-111-whole.json'))).toEqual([entry]);
    expect(readdirSync(dir).sort()).toEqual(
      [
        'subscription-tokens-111-whole.json',
        'subscription-tokens-222-cut.tmp.unreadable',
        'subscription-tokens-333-young.tmp',
        written.slice(dir.length + 1),
      ].sort(),
    );
  });
});

import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDateUtc } from './timestamp';

const ROOT = resolve(__dirname, '../..');

/**
 * Runs `script` in a node whose time zone is New York, with `modules` (paths under src/, without
 * extension) from the build: the zone is read once per process, and jest's process.env is its
 * own copy, so this process cannot be moved to another zone.
 */
function inNewYork(modules: string[], script: string): unknown {
  const built = modules.map((m) => {
    const js = resolve(ROOT, 'dist', `${m}.js`);
    if (!existsSync(js)) throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
    if (statSync(js).mtimeMs < statSync(resolve(ROOT, 'src', `${m}.ts`)).mtimeMs)
      throw new Error(`dist/${m}.js is older than its source: run \`npm run build\` first (npm test does)`);
    return js;
  });
  const requires = built.map((js, i) => `const m${i} = require(${JSON.stringify(js)});`).join('\n');
  const out = execFileSync(process.execPath, ['-e', `${requires}\nconsole.log(JSON.stringify((() => { ${script} })()));`], {
    env: { ...process.env, TZ: 'America/New_York' },
    encoding: 'utf8',
  });
  return JSON.parse(out) as unknown;
}

describe('times without an offset', () => {
  const texts = ['2026-12-06T10:00:00', '2026-12-06 10:00:00', '2026-12-06T10:00', '2026-12-06T10:00:00.000'];
  const utc = Date.UTC(2026, 11, 6, 10);

  it("are UTC, whatever the server's time zone: admin input, account imports, models.yaml's created", () => {
    expect(
      inNewYork(
        ['common/timestamp', 'admin/dto/validators', 'subscription/account-import'],
        `const texts = ${JSON.stringify(texts)};
         return {
           parsed: texts.map((t) => m0.parseDateUtc(t)),
           admin: texts.map((t) => m1.parseTimestamp(t).getTime()),
           expiry: texts.map((t) => m2.parseExpiry(t)),
           dateOnly: m1.parseTimestamp('2026-12-06').getTime(),
         };`,
      ),
    ).toEqual({ parsed: texts.map(() => utc), admin: texts.map(() => utc), expiry: texts.map(() => utc), dateOnly: Date.UTC(2026, 11, 6) });
  });

  it('leave any other form to Date.parse, offsets included', () => {
    expect(parseDateUtc('2026-12-06T10:00:00-05:00')).toBe(Date.UTC(2026, 11, 6, 15));
    expect(parseDateUtc('2026-12-06T10:00:00Z')).toBe(utc);
    expect(parseDateUtc('Sun, 06 Dec 2026 10:00:00 GMT')).toBe(utc);
    expect(parseDateUtc('soon')).toBeNaN();
  });
});

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sweepStaleConfigCopies } from './cluster';

describe('sweepStaleConfigCopies', () => {
  let root: string;
  beforeEach(() => (root = mkdtempSync(join(tmpdir(), 'hi-sweep-'))));
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("removes the copies of primaries that are gone, and no one else's", () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    const mk = (name: string) => {
      mkdirSync(join(root, name));
      writeFileSync(join(root, name, 'accepted.json'), '{"models":"api_key: sk-secret"}');
      return join(root, name);
    };
    const stale = mk(`hybridinference-config-${dead}-AbC123`);
    // A container's primary is pid 1 at every restart: a copy under its own pid is a predecessor's.
    const mine = mk(`hybridinference-config-${process.pid}-QrS456`);
    const live = mk(`hybridinference-config-${process.ppid}-XyZ789`);
    const old = mk('hybridinference-config-AbC123'); // the unnamed shape: whose, unknown
    const other = mk(`something-${dead}-else`);
    expect(sweepStaleConfigCopies(root).sort()).toEqual([stale, mine].sort());
    expect([stale, mine, live, old, other].map(existsSync)).toEqual([false, false, true, true, true]);
  });

  it('finds nothing in a directory that is not there', () => {
    expect(sweepStaleConfigCopies(join(root, 'missing'))).toEqual([]);
  });
});

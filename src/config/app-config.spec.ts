import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectionsForFiles, openFilesLimit } from './app-config';

describe('the connection cap for an open-file limit', () => {
  const limits = (line: string) => {
    const file = join(mkdtempSync(join(tmpdir(), 'hi-limits-')), 'limits');
    writeFileSync(
      file,
      `Limit                     Soft Limit           Hard Limit           Units     \nMax processes             95434                95434                processes \n${line}\nMax locked memory         8388608              8388608              bytes     \n`,
    );
    return file;
  };

  it("reads the soft limit from Linux's /proc table", () => {
    expect(openFilesLimit(limits('Max open files            1024                 1048576              files     '))).toBe(1024);
    expect(openFilesLimit(limits('Max open files            unlimited            unlimited            files     '))).toBeUndefined();
    expect(openFilesLimit('/nonexistent/limits')).toBeUndefined();
    expect(openFilesLimit()).toBeGreaterThan(0); // this process's, on Linux
  });

  it('keeps half the descriptors for the rest of the process, and has no cap where the limit is unknown', () => {
    expect(connectionsForFiles(1024)).toBe(512);
    expect(connectionsForFiles(1_048_576)).toBe(524_288);
    expect(connectionsForFiles(50)).toBe(25);
    expect(connectionsForFiles(undefined)).toBe(0);
  });
});

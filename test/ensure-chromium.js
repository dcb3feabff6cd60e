// Part of `npm test`: the browser spec (test/e2e/browser.e2e-spec.ts) drives Debian's chromium.
// On a fresh machine of this project's kind (root, Debian's apt) it is installed here, so that
// the README's test command does all the set-up; elsewhere the spec is skipped outside CI, and
// under CI=true its absence fails the spec.
const process = require('node:process');
const { existsSync } = require('node:fs');
const { spawnSync } = require('node:child_process');

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function apt(...args) {
  return (
    spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
      .status === 0
  );
}

if (!existsSync(CHROMIUM)) {
  const canInstall = typeof process.getuid === 'function' && process.getuid() === 0 && spawnSync('apt-get', ['--version']).status === 0;
  if (canInstall) {
    process.stdout.write("Installing Debian's chromium for the browser spec (apt-get install -y chromium)\n");
    if (!apt('install', '-y', '-qq', 'chromium') && apt('update', '-qq')) apt('install', '-y', '-qq', 'chromium');
  }
  if (!existsSync(CHROMIUM))
    process.stderr.write(
      `${CHROMIUM} is missing and could not be installed: the browser spec will be skipped (CI=true makes that a failure)\n`,
    );
}

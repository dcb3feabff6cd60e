// Our TypeScript goes through ts-jest (transpile only: `npm run typecheck` checks types once for
// the whole project). The ES-module-only packages go through test/esm-to-cjs.transform.js.
const ESM_PACKAGES = ['@nestjs', 'uid', 'load-esm', 'file-type', '@standard-schema', 'es-toolkit', 'dotenv-expand'];

module.exports = {
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': ['ts-jest', { diagnostics: false }],
    '/node_modules/.+\\.m?js$': '<rootDir>/test/esm-to-cjs.transform.js',
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_PACKAGES.join('|')})/)`],
  moduleFileExtensions: ['js', 'json', 'ts', 'mjs'],
  testRegex: '(src/.*\\.spec\\.ts|test/.*\\.e2e-spec\\.ts)$',
  testTimeout: 30000,
};

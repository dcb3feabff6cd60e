// Nest 12 ships as ES modules; on Node 20 Jest cannot require() them, so @swc/jest compiles
// those packages (and our TypeScript) to CommonJS for the test run. Node itself runs the built
// app with its native require(esm).
const swc = [
  '@swc/jest',
  {
    jsc: {
      parser: { syntax: 'typescript', decorators: true },
      transform: { legacyDecorator: true, decoratorMetadata: true },
      target: 'es2023',
    },
    module: { type: 'commonjs' },
  },
];

const ESM_PACKAGES = ['@nestjs', 'uid', 'load-esm', 'file-type', '@standard-schema', 'es-toolkit', 'dotenv-expand'];

module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.(t|m?j)s$': swc },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_PACKAGES.join('|')})/)`],
  moduleFileExtensions: ['js', 'json', 'ts', 'mjs'],
  testRegex: '(src/.*\\.spec\\.ts|test/.*\\.e2e-spec\\.ts)$',
  testTimeout: 30000,
};

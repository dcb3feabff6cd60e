// Jest on Node 20 cannot require() ES modules, and NestJS 12 ships only ES modules. This turns
// those few packages into CommonJS for the test run (Node itself loads them natively). ts-jest and
// plain Babel leave `import.meta` alone, which CommonJS cannot parse; swc and esbuild would do it
// but need platform binaries that this project's registry cannot lock. So: rewrite the
// `import.meta` forms these packages use, then let the TypeScript compiler we already have
// transpile the module syntax.
const { createHash } = require('node:crypto');
const ts = require('typescript');

const OPTIONS = { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, allowJs: true, esModuleInterop: true, sourceMap: false };

module.exports = {
  process(source, filename) {
    const code = source
      // `const require = createRequire(import.meta.url)`: CommonJS already has that require.
      .replace(/^\s*(?:const|let|var)\s+require\s*=\s*[^;\n]+;?$/m, '')
      .replace(/\bimport\.meta\.url\b/g, "require('node:url').pathToFileURL(__filename).href")
      .replace(/\bimport\.meta\.resolve\(/g, 'require.resolve(')
      .replace(/\bimport\.meta\.dirname\b/g, '__dirname')
      .replace(/\bimport\.meta\.filename\b/g, '__filename');
    return { code: ts.transpileModule(code, { fileName: filename, compilerOptions: OPTIONS }).outputText };
  },
  getCacheKey(source, filename) {
    return createHash('sha1').update(source).update(filename).update(ts.version).update('esm-to-cjs v2').digest('hex');
  },
};

// One linter and formatter for the TypeScript and .mjs files: ESLint with neostandard (the
// successor of `standard`, whose style this code was written in: 2 spaces, single quotes, no
// semicolons, a space before a function's parentheses). `npm run lint` checks the app, the system
// tests (../tests) and the scripts (../scripts) from the repository's root, as this config's base
// path (scripts/test.sh runs it before the tests); `npm run format` fixes what can be fixed. The
// import-cycle check is madge (`npm run cycles`).
import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['**/dist/**', '**/coverage/**', '**/.tap/**', '**/node_modules/**'] }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (a stop that may not hold the caller).
      'no-void': ['error', { allowAsStatement: true }],
      // It cannot see a loop's condition changed by a callback or another async function (the
      // tests' publishers run until a flag set elsewhere), so it reports only false positives here.
      'no-unmodified-loop-condition': 'off'
    }
  },
  {
    // The system tests hold BitBake and shell text, whose ${VAR} is meant literally.
    files: ['tests/**'],
    rules: { 'no-template-curly-in-string': 'off' }
  }
]

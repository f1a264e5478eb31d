#!/usr/bin/env node
// The CLI lives in TypeScript; `npm install` (prepare) builds it into dist/.
import { main } from '../dist/src/cli.js';

main(process.argv.slice(2)).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => { console.error(err?.stack ?? String(err)); process.exitCode = 1; },
);

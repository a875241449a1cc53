#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build` (npm ci runs it via "prepare").
import '../dist/src/cli/main.js';

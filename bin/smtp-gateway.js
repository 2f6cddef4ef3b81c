#!/usr/bin/env node
// The smtp-gateway command. The TypeScript sources are compiled to dist/ by `npm run build`
// (`npm start` builds first).
import { existsSync } from "node:fs"

const entry = new URL("../dist/cli.js", import.meta.url)
if (!existsSync(entry)) {
  process.stderr.write("smtp-gateway: dist/ is missing; run `npm run build` first (npm start does it for you)\n")
  process.exit(1)
}
await import(entry.href)

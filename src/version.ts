/** The gateway's version, read from package.json (shown by --help, in captures and in telemetry). */
import { createRequire } from "node:module"

export const version: string = (createRequire(import.meta.url)("../package.json") as { version: string }).version

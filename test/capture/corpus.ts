/**
 * The corpus of captured sessions (test/fixtures/sessions/*.smtp): where it lives and the gateway
 * settings it was recorded with and is replayed against. Shared by the replay test and the
 * maintenance tool that records it (scripts/record-corpus.ts). Test support only.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const sessionsDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "sessions")

/** Environment of the gateway the corpus is recorded with and replayed against (besides startGateway's). */
export const corpusEnv = {
  MAX_MESSAGE_SIZE: "50000",
  CAPTURE_BODY: "keep",
  AUTH_FAILURE_DELAY: "0 millis"
} as const

export const sessionFiles = (): ReadonlyArray<string> =>
  fs.readdirSync(sessionsDir).filter((f) => f.endsWith(".smtp")).sort()

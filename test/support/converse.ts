/**
 * Runs a `C:`/`S:` conversation script against an SMTP port (conventions.md #11): a thin name for
 * `replay` in src/capture/Replay.ts, the one runner hand-written conversations and captured sessions
 * share. Test support only.
 */
import type { Effect } from "effect"
import { type ReplayError, type ReplayResult, replay, type ReplayTarget } from "../../src/capture/Replay.ts"

export { ConversationMismatch } from "../../src/capture/Replay.ts"
export { matches } from "../../src/capture/Transcript.ts"

/** Runs `script` against `options.port`; fails on the first mismatch with the line, expected and got. */
export const converse = (script: string, options: ReplayTarget): Effect.Effect<ReplayResult, ReplayError> =>
  replay(script, options)

/** The start of a secured session: greeting, EHLO, STARTTLS, EHLO again (then AUTH, usually). */
export const startTls = (helo = "client.example") => `
  S: 220 *
  C: EHLO ${helo}
  S: 250 *
  C: STARTTLS
  S: 220 *
  C: EHLO ${helo}
  S: 250 *
`

/**
 * Runs a `C:`/`S:` conversation script against an SMTP port (conventions.md #11) and returns what
 * happened, line by line. Consecutive `C:` lines go out in one write (pipelining); each `S:` line is
 * matched in order (`*` matches anything); after a 220 to `STARTTLS` the socket is upgraded to TLS.
 * Hand-written conversation tests and the replay of captured sessions share it.
 */
import { Effect, Schema } from "effect"
import { connect, type SmtpClientError, type SmtpClientOptions, type SmtpReply } from "./SmtpClient.ts"

export interface ScriptLine {
  /** 1-based line number in the script text. */
  readonly line: number
  readonly direction: "C" | "S"
  /** What follows `C: ` or `S: `. */
  readonly text: string
}

export interface TranscriptEntry {
  readonly direction: "C" | "S"
  readonly text: string
}

export interface ConverseResult {
  /** Everything sent and received, in order (multi-line replies line by line). */
  readonly transcript: ReadonlyArray<TranscriptEntry>
  /** Every reply received, in order. */
  readonly replies: ReadonlyArray<SmtpReply>
  /** Whether the conversation ended on TLS. */
  readonly tls: boolean
}

export class ScriptError extends Schema.TaggedError<ScriptError>()("ScriptError", {
  line: Schema.Number,
  message: Schema.String
}) {}

/** An `S:` line did not match what the server said. */
export class ConversationMismatch extends Schema.TaggedError<ConversationMismatch>()("ConversationMismatch", {
  line: Schema.Number,
  expected: Schema.String,
  got: Schema.String,
  transcript: Schema.Array(Schema.Struct({ direction: Schema.Literals(["C", "S"]), text: Schema.String }))
}) {
  override get message() {
    const tail = this.transcript.slice(-12).map((e) => `  ${e.direction}: ${e.text}`).join("\n")
    return `script line ${this.line}: expected "${this.expected}" but got "${this.got}"\nlast lines:\n${tail}`
  }
}

/** Parses script text: blank lines and `#` comments are skipped, indentation ignored. */
export const parseScript = (script: string): Effect.Effect<ReadonlyArray<ScriptLine>, ScriptError> =>
  Effect.gen(function*() {
    const out: Array<ScriptLine> = []
    const rows = script.split(/\r?\n/)
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!.replace(/^\s+/, "")
      if (row === "" || row.startsWith("#")) continue
      const match = /^([CS]):(?: ?)(.*)$/.exec(row)
      if (match === null) return yield* new ScriptError({ line: i + 1, message: `not a C: or S: line: "${row}"` })
      out.push({ line: i + 1, direction: match[1] as "C" | "S", text: match[2]! })
    }
    return out
  })

/** `*` matches any run of characters; everything else literally. */
export const matches = (pattern: string, line: string): boolean => {
  const source = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")
  return new RegExp(`^${source}$`, "s").test(line)
}

const isContinuation = (pattern: string) => /^\d{3}-/.test(pattern)

/** Runs `script` against `options.port`; fails on the first mismatch with the line, expected and got. */
export const converse = (
  script: string,
  options: SmtpClientOptions
): Effect.Effect<ConverseResult, ScriptError | ConversationMismatch | SmtpClientError> =>
  Effect.scoped(Effect.gen(function*() {
    const steps = yield* parseScript(script)
    const client = yield* connect(options)
    const transcript: Array<TranscriptEntry> = []
    const replies: Array<SmtpReply> = []
    let onTls = options.implicitTls === true
    let pending: Array<string> = [] // lines of the current reply not yet matched
    let spelled = false // the script spelled out a continuation line of the current reply
    let lastSent = ""

    const mismatch = (step: ScriptLine, got: string) =>
      new ConversationMismatch({ line: step.line, expected: step.text, got, transcript })

    const nextReply = Effect.gen(function*() {
      const reply = yield* client.readReply
      replies.push(reply)
      for (const text of reply.lines) transcript.push({ direction: "S", text })
      pending = [...reply.lines]
      spelled = false
      if (reply.code === 220 && /^STARTTLS$/i.test(lastSent.trim())) {
        yield* client.startTls
        onTls = true
      }
    })

    let i = 0
    while (i < steps.length) {
      const step = steps[i]!
      if (step.direction === "C") {
        const batch: Array<string> = []
        while (i < steps.length && steps[i]!.direction === "C") batch.push(steps[i++]!.text)
        for (const text of batch) transcript.push({ direction: "C", text })
        lastSent = batch[batch.length - 1]!
        yield* client.write(batch.map((text) => text + "\r\n").join(""))
        continue
      }
      i++
      if (pending.length === 0) {
        yield* nextReply.pipe(Effect.mapError((error) => mismatch(step, `<${error.message}>`)))
      }
      if (isContinuation(step.text)) {
        const got = pending.shift()!
        if (pending.length === 0 || !matches(step.text, got)) return yield* mismatch(step, got)
        spelled = true
        continue
      }
      // a final line: a multi-line reply collapses to its last line unless the script spelled it out
      if (spelled && pending.length > 1) return yield* mismatch(step, pending[0]!)
      const got = pending[pending.length - 1]!
      pending = []
      if (!matches(step.text, got)) return yield* mismatch(step, got)
    }
    return { transcript, replies, tls: onTls }
  }))


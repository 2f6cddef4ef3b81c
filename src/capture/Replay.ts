/**
 * Replays a transcript (a capture or a hand-written conversation) against an SMTP port: `C:` lines out
 * (consecutive ones in one write), TLS where it started, credentials for `<redacted>`, every `S:` line
 * checked, the first difference as a diff. The one runner for tests, the CLI and upstream assertions.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect, Redacted, Schema } from "effect"
import { CanonicalMessage } from "../domain/Message.ts"
import { connect, type SmtpClientError, type SmtpClientOptions, type SmtpReply } from "./SmtpClient.ts"
import {
  type Entry,
  type Located,
  matches,
  parse,
  printEntry,
  redacted,
  redactedInvalid,
  type Transcript,
  TranscriptError
} from "./Transcript.ts"

export interface ReplayCredentials {
  readonly username: string
  readonly password: Redacted.Redacted<string>
}

/** Reads what the upstream has received so far, keyed (a file name, a request index); replay returns what is new. */
export interface UpstreamProbe<A> {
  readonly requests: Effect.Effect<ReadonlyMap<string, A>>
}

export interface ReplayTarget<A = never> extends SmtpClientOptions {
  /** Put in place of `<redacted>` AUTH payloads; a transcript that has some needs them. */
  readonly credentials?: ReplayCredentials | undefined
  /** Where to see the upstream requests the replay causes (returned in `ReplayResult.upstream`). */
  readonly upstream?: UpstreamProbe<A> | undefined
}

export interface ReplayLine {
  readonly direction: "C" | "S"
  readonly text: string
}

export interface ReplayResult<A = never> {
  /** What was sent and received, in order (redacted payloads as in the transcript, replies line by line). */
  readonly transcript: ReadonlyArray<ReplayLine>
  /** Every reply received, in order. */
  readonly replies: ReadonlyArray<SmtpReply>
  /** Whether the conversation ended on TLS. */
  readonly tls: boolean
  /** The upstream requests that appeared during the replay (empty without a probe). */
  readonly upstream: ReadonlyArray<A>
}

const LineSchema = Schema.Struct({ direction: Schema.Literals(["C", "S"]), text: Schema.String })

/** The server did not say what the transcript says (or did not close, or TLS did not start). */
export class ConversationMismatch extends Schema.TaggedError<ConversationMismatch>()("ConversationMismatch", {
  /** Line of the transcript text. */
  line: Schema.Number,
  expected: Schema.String,
  got: Schema.String,
  /** Every line of the reply that did not match (one line for other differences). */
  gotLines: Schema.Array(Schema.String),
  /** The conversation up to the difference, as it matched. */
  context: Schema.Array(LineSchema),
  /** Everything sent and received. */
  transcript: Schema.Array(LineSchema)
}) {
  override get message() {
    return `script line ${this.line}: expected "${this.expected}" but got "${this.got}"\n${this.diff}`
  }

  /** The last lines that matched, then `-` what the transcript expects and `+` what came. */
  get diff(): string {
    const context = this.context.slice(-8).map((l) => `  ${l.direction === "C" ? "C:" : "S:"} ${l.text}`)
    const got = this.gotLines.length > 0 ? this.gotLines : [this.got]
    return [...context, `- ${this.expected.startsWith("--") ? this.expected : `S: ${this.expected}`}`, ...got.map((g) => `+ ${g.startsWith("<") ? g : `S: ${g}`}`)]
      .join("\n")
  }
}

/** The transcript says `<redacted>` but the replay was given no credentials. */
export class CredentialsNeeded extends Schema.TaggedError<CredentialsNeeded>()("CredentialsNeeded", {
  line: Schema.Number
}) {
  override get message() {
    return `line ${this.line} has a redacted AUTH payload: give credentials to replay it (--user U --password-stdin)`
  }
}

export type ReplayError = TranscriptError | ConversationMismatch | CredentialsNeeded | SmtpClientError

const isContinuation = (pattern: string) => /^\d{3}-/.test(pattern)
const isRedaction = (text: string) => text === redacted || text === redactedInvalid
const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")

/** A message of `size` bytes standing in for a body kept only as its digest (From: the envelope sender). */
const standInBody = (size: number, sha256: string, from: string, to: string): ReadonlyArray<string> => {
  const header = [
    `From: <${from}>`,
    `To: <${to}>`,
    "Subject: Stand-in for a captured body",
    `X-Replay-Of-Sha256: ${sha256}`,
    ""
  ]
  const lines = [...header]
  let bytes = header.reduce((n, l) => n + l.length + 2, 0)
  while (bytes < size) {
    const line = "x".repeat(Math.max(0, Math.min(76, size - bytes - 2)))
    lines.push(line)
    bytes += line.length + 2
  }
  return lines
}

/** What the replay tracks of its own side: inside DATA or not, the AUTH exchange, the envelope (for stand-in bodies). */
interface ClientState {
  inBody: boolean
  mechanism: string
  /** SASL payloads sent in the current AUTH exchange. */
  payloads: number
  mailFrom: string
  rcptTo: string
}

const payloadFor = (state: ClientState, token: string, credentials: ReplayCredentials): string => {
  const username = credentials.username
  const password = Redacted.value(credentials.password) + (token === redactedInvalid ? "-not-the-password" : "")
  const step = state.payloads++
  if (state.mechanism === "PLAIN") return b64(`\0${username}\0${password}`)
  return step === 0 ? b64(username) : b64(password)
}

/** Reads and parses a transcript file. */
export const load = (file: string): Effect.Effect<Transcript, TranscriptError> =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8"),
    catch: (error) => new TranscriptError({ line: 0, message: `cannot read ${file}: ${String(error)}` })
  }).pipe(Effect.flatMap((text) => fromText(text)))

const fromText = (text: string): Effect.Effect<Transcript, TranscriptError> =>
  Effect.suspend(() => Effect.fromResult(parse(text)))

/** Replays `transcript` (parsed, or text) against `target`. */
export const replay = <A = never>(
  transcript: Transcript | string,
  target: ReplayTarget<A>
): Effect.Effect<ReplayResult<A>, ReplayError> =>
  Effect.scoped(Effect.gen(function*() {
    const { entries } = typeof transcript === "string" ? yield* fromText(transcript) : transcript
    const before = target.upstream === undefined ? new Map<string, A>() : yield* target.upstream.requests
    const implicitTls = target.implicitTls === true || entries[0]?.entry._tag === "TlsStarted"
    const client = yield* connect({ ...target, implicitTls })
    const happened: Array<ReplayLine> = []
    const context: Array<ReplayLine> = []
    const replies: Array<SmtpReply> = []
    const state: ClientState = { inBody: false, mechanism: "", payloads: 0, mailFrom: "", rcptTo: "" }
    let onTls = implicitTls
    let pending: Array<string> = [] // lines of the current reply not yet matched
    let spelled = false // the transcript spelled out a continuation line of the current reply
    let lastSent = ""

    const mismatch = (at: Located, expected: string, got: string, gotLines: ReadonlyArray<string> = []) =>
      new ConversationMismatch({ line: at.line, expected, got, gotLines: [...gotLines], context, transcript: happened })

    const nextReply = Effect.gen(function*() {
      const reply = yield* client.readReply
      replies.push(reply)
      for (const text of reply.lines) happened.push({ direction: "S", text })
      pending = [...reply.lines]
      spelled = false
      if (reply.code === 220 && /^STARTTLS$/i.test(lastSent.trim())) {
        yield* client.startTls
        onTls = true
      }
    })

    /** The line a `C:` line puts on the wire, given the AUTH exchange so far. */
    const wire = (at: Located, text: string): Effect.Effect<string, CredentialsNeeded> =>
      Effect.gen(function*() {
        if (state.inBody) {
          if (text === ".") state.inBody = false
          return text
        }
        const auth = /^AUTH\s+(\S+)(?:\s+(\S+))?\s*$/i.exec(text)
        if (auth !== null) {
          state.mechanism = auth[1]!.toUpperCase()
          state.payloads = 0
          const initial = auth[2]
          if (initial === undefined || !isRedaction(initial)) {
            if (initial !== undefined) state.payloads = 1
            return text
          }
          if (target.credentials === undefined) return yield* new CredentialsNeeded({ line: at.line })
          return `AUTH ${auth[1]} ${payloadFor(state, initial, target.credentials)}`
        }
        if (isRedaction(text)) {
          if (target.credentials === undefined) return yield* new CredentialsNeeded({ line: at.line })
          return payloadFor(state, text, target.credentials)
        }
        const mail = /^MAIL FROM:\s*<([^>]*)>/i.exec(text)
        if (mail !== null) state.mailFrom = mail[1]!
        const rcpt = /^RCPT TO:\s*<([^>]*)>/i.exec(text)
        if (rcpt !== null && state.rcptTo === "") state.rcptTo = rcpt[1]!
        if (/^DATA$/i.test(text)) state.inBody = true
        return text
      })

    const bodyLines = (entry: Extract<Entry, { _tag: "BodyDigest" }>) =>
      standInBody(entry.size, entry.sha256, state.mailFrom, state.rcptTo || state.mailFrom)
        .map((l) => (l.startsWith(".") ? "." + l : l))

    let i = 0
    while (i < entries.length) {
      const at = entries[i]!
      const entry = at.entry
      switch (entry._tag) {
        case "Client":
        case "BodyDigest": {
          const out: Array<string> = []
          while (i < entries.length) {
            const next = entries[i]!
            if (next.entry._tag === "Client") out.push(yield* wire(next, next.entry.text))
            else if (next.entry._tag === "BodyDigest") out.push(...bodyLines(next.entry))
            else break
            const shown: ReplayLine = { direction: "C", text: next.entry._tag === "Client" ? next.entry.text : printEntry(next.entry) }
            happened.push(shown)
            context.push(shown)
            i++
          }
          lastSent = out[out.length - 1] ?? ""
          yield* client.write(out.map((text) => text + "\r\n").join(""))
          continue
        }
        case "TlsStarted": {
          i++
          if (!onTls) return yield* mismatch(at, printEntry(entry), "<the connection is not on TLS>")
          continue
        }
        case "Closed": {
          i++
          if (entry.by === "client") {
            yield* client.close
            continue
          }
          if (pending.length > 0) return yield* mismatch(at, printEntry(entry), pending[0]!, pending)
          yield* client.awaitClose.pipe(
            Effect.mapError(() => mismatch(at, printEntry(entry), "<the server kept the connection open>"))
          )
          continue
        }
        case "Server": {
          i++
          const expected = entry.text
          if (pending.length === 0) {
            yield* nextReply.pipe(Effect.mapError((error) => mismatch(at, expected, `<${error.message}>`)))
          }
          const reply = pending
          if (isContinuation(expected)) {
            const got = pending.shift()!
            if (pending.length === 0 || !matches(expected, got)) return yield* mismatch(at, expected, got, [got])
            context.push({ direction: "S", text: got })
            spelled = true
            continue
          }
          // a final line: a multi-line reply collapses to its last line unless the transcript spelled it out
          if (spelled && pending.length > 1) return yield* mismatch(at, expected, pending[0]!, pending)
          const got = pending[pending.length - 1]!
          pending = []
          if (!matches(expected, got)) return yield* mismatch(at, expected, got, reply)
          for (const text of reply) context.push({ direction: "S", text })
        }
      }
    }
    // a 250 comes after the upstream accepted (design.md §2): what it received is there by now
    const upstream: Array<A> = []
    if (target.upstream !== undefined) {
      for (const [key, request] of yield* target.upstream.requests) if (!before.has(key)) upstream.push(request)
    }
    return { transcript: happened, replies, tls: onTls, upstream }
  }))

const decodeCanonical = Schema.decodeUnknownSync(Schema.fromJsonString(CanonicalMessage))

/** The outbox upstream as a probe: every `<id>.json` (the canonical message) in `dir`, keyed by file name. */
export const outboxProbe = (dir: string): UpstreamProbe<CanonicalMessage> => ({
  requests: Effect.promise(async () => {
    const out = new Map<string, CanonicalMessage>()
    const names = await fs.readdir(dir).catch(() => [] as Array<string>)
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      out.set(name, decodeCanonical(await fs.readFile(path.join(dir, name), "utf8")))
    }
    return out
  })
})

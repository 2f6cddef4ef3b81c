/**
 * Recorder: with CAPTURE_DIR set, writes sampled SMTP sessions as `.smtp` transcripts, atomically, as
 * `<date>-<session id>.smtp` when each ends; AUTH payloads and SASL continuations become `<redacted>`,
 * bodies are kept or digested. Fed bytes and replies by smtp/Listener.ts; knows nothing of smtp-server.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Clock, Context, Effect, FiberSet, Layer, Option, Random } from "effect"
import { GatewayConfig, type GatewayConfigShape } from "../Config.ts"
import { makeCidrMatcher } from "../policy/Cidr.ts"
import { version } from "../version.ts"
import { type Entry, escapeRegExp, print, redacted, redactedInvalid } from "./Transcript.ts"

/** What the adapter reports of one recorded connection, as it happens (synchronous, cheap). */
export interface ConnectionTap {
  /** Bytes from the client, in plaintext, as the command parser receives them. */
  readonly client: (chunk: Uint8Array | string) => void
  /** A reply as written to the client (lines of a multi-line reply joined by CRLF). */
  readonly server: (payload: string) => void
  /** The TLS handshake finished; `detail` is informative (the cipher). */
  readonly tls: (detail: string) => void
}

/** What the adapter knows when the connection has closed. */
export interface SessionEnd {
  /** The authenticated user, if any. */
  readonly user: string | undefined
  /** The EHLO/HELO name, if any. */
  readonly helo: string | undefined
}

/** Bytes of a line the recorder keeps while waiting for its end; more is dropped. */
const maxPartialLine = 1024 * 1024

/**
 * Session-specific values in replies become `*`, so a capture replays against any gateway: the
 * gateway's host name, the client's address, queue ids and retry delays.
 */
export const generalizer = (hostname: string, remoteAddress: string) => {
  const host = hostname === "" ? undefined : new RegExp(`(?<![\\w.])${escapeRegExp(hostname)}(?![\\w-]|\\.\\w)`, "gi")
  const address = remoteAddress === "" ? undefined : new RegExp(`\\[?${escapeRegExp(remoteAddress)}\\]?`, "g")
  return (line: string): string => {
    let out = line
    if (host !== undefined) out = out.replace(host, "*")
    if (address !== undefined) out = out.replace(address, "*")
    return out
      .replace(/queued as \S+/g, "queued as *")
      .replace(/try again in \d+ seconds/g, "try again in * seconds")
  }
}

/** How many SASL payloads follow an AUTH command on their own lines. */
const continuationsOf = (mechanism: string, initial: boolean) => {
  switch (mechanism) {
    case "PLAIN":
      return initial ? 0 : 1
    case "LOGIN":
      return initial ? 1 : 2
    default:
      return Number.POSITIVE_INFINITY // unknown to us: everything until the server answers
  }
}

/** Adds a body line, as the gateway receives it (dot-unstuffed, CRLF), to the body's digest (in batches). */
const hashLine = (body: BodyState, text: string) => {
  body.unhashed.push(text.startsWith(".") ? text.slice(1) : text, "\r\n")
  if (body.unhashed.length >= 256) flushHash(body)
}
const flushHash = (body: BodyState) => {
  body.hash.update(body.unhashed.join(""), "utf8")
  body.unhashed.length = 0
}

interface BodyState {
  /** Index of the first kept body line. */
  start: number | undefined
  readonly hash: crypto.Hash
  readonly unhashed: Array<string>
  size: number
  keep: boolean
}

/** One connection being recorded: a line splitter and the small state machine that redacts. */
export class Recording {
  readonly entries: Array<Entry> = []
  private partial: Array<Uint8Array> = []
  private partialBytes = 0
  private mode: "command" | "data-pending" | "body" = "command"
  /** Client lines that arrived after DATA, before its reply said whether they are the body. */
  private held: Array<string> = []
  private body: BodyState | undefined
  /** Payload lines still expected in the current AUTH exchange (as sent by a well-behaved client). */
  private continuations = 0
  /** Indices of the redacted entries of the AUTH exchange in progress; undefined when none is. */
  private exchange: Array<number> | undefined

  constructor(
    readonly keepBodies: boolean,
    readonly bodyCap: number,
    readonly generalize: (line: string) => string
  ) {}

  client(chunk: Uint8Array | string): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "binary") : chunk
    let start = 0
    for (;;) {
      const nl = bytes.indexOf(0x0a, start)
      if (nl < 0) break
      const piece = bytes.subarray(start, nl)
      const line = this.partial.length === 0 ? Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength) : Buffer.concat([...this.partial, piece])
      this.partial = []
      this.partialBytes = 0
      const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length
      this.clientLine(line.toString("utf8", 0, end))
      start = nl + 1
    }
    if (start < bytes.length && this.partialBytes < maxPartialLine) {
      const rest = bytes.subarray(start, start + (maxPartialLine - this.partialBytes))
      this.partial.push(Buffer.from(rest))
      this.partialBytes += rest.length
    }
  }

  private clientLine(text: string): void {
    switch (this.mode) {
      case "body":
        return this.bodyLine(text)
      case "data-pending":
        this.held.push(text)
        return
      case "command":
        return this.command(text)
    }
  }

  private command(text: string): void {
    if (this.exchange !== undefined && this.continuations > 0) {
      this.continuations--
      this.exchange.push(this.entries.length)
      this.entries.push({ _tag: "Client", text: redacted })
      return
    }
    const auth = /^(AUTH)(\s+)(\S+)(?:\s+\S.*)?$/i.exec(text)
    if (auth !== null) {
      const mechanism = auth[3]!.toUpperCase()
      const initial = /^AUTH\s+\S+\s+\S/i.test(text)
      this.continuations = continuationsOf(mechanism, initial)
      this.exchange = initial ? [this.entries.length] : []
      this.entries.push({ _tag: "Client", text: initial ? `${auth[1]}${auth[2]}${auth[3]} ${redacted}` : text.trimEnd() })
      return
    }
    this.entries.push({ _tag: "Client", text })
    if (/^DATA\s*$/i.test(text)) this.mode = "data-pending"
  }

  private bodyLine(text: string): void {
    const body = this.body!
    if (text === ".") {
      this.endBody()
      this.entries.push({ _tag: "Client", text })
      this.mode = "command"
      return
    }
    const unstuffed = text.startsWith(".") ? text.slice(1) : text
    body.size += Buffer.byteLength(unstuffed, "utf8") + 2
    if (body.keep && body.size > this.bodyCap) {
      // too large to keep (the gateway refuses it anyway): the body becomes its digest
      body.keep = false
      const kept = body.start === undefined ? [] : this.entries.splice(body.start)
      for (const entry of kept) if (entry._tag === "Client") hashLine(body, entry.text)
    }
    if (!body.keep) {
      hashLine(body, text)
      return
    }
    body.start ??= this.entries.length
    this.entries.push({ _tag: "Client", text })
  }

  private endBody(): void {
    const body = this.body
    if (body === undefined) return
    this.body = undefined
    if (body.keep) return
    flushHash(body)
    this.entries.push({ _tag: "BodyDigest", size: body.size, sha256: body.hash.digest("hex") })
  }

  server(payload: string): void {
    const lines = payload.split("\r\n")
    const code = Number(lines[lines.length - 1]!.slice(0, 3))
    if (this.mode === "data-pending") {
      const held = this.held
      this.held = []
      if (code === 354) {
        this.mode = "body"
        this.body = { start: undefined, hash: crypto.createHash("sha256"), unhashed: [], size: 0, keep: this.keepBodies }
      } else {
        this.mode = "command"
      }
      for (const line of held) this.clientLine(line)
    }
    for (const line of lines) this.entries.push({ _tag: "Server", text: this.generalize(line) })
    if (this.exchange !== undefined && code !== 334) {
      if (code === 535) {
        for (const at of this.exchange) {
          const entry = this.entries[at]
          if (entry?._tag === "Client") {
            this.entries[at] = { _tag: "Client", text: entry.text.replace(redacted, redactedInvalid) }
          }
        }
      }
      this.exchange = undefined
      this.continuations = 0
    }
  }

  tls(detail: string): void {
    this.entries.push({ _tag: "TlsStarted", detail })
  }

  /** The connection closed: lines still held are commands, a body cut short ends here. */
  finish(): ReadonlyArray<Entry> {
    if (this.mode === "data-pending") {
      const held = this.held
      this.held = []
      this.mode = "command"
      for (const line of held) this.command(line)
    }
    if (this.mode === "body") this.endBody()
    const last = this.entries[this.entries.length - 1]
    const byServer = last?._tag === "Server" && /^(221|421)[ -]/.test(last.text)
    this.entries.push({ _tag: "Closed", by: byServer ? "server" : "client" })
    return this.entries
  }
}

/** One line saying what the session did, for the header. */
export const summarize = (entries: ReadonlyArray<Entry>): string => {
  const parts: Array<string> = []
  let mechanism = ""
  let accepted = 0
  const refused: Array<string> = []
  for (const entry of entries) {
    if (entry._tag === "TlsStarted") parts.push("TLS")
    if (entry._tag === "Client") mechanism = /^AUTH\s+(\S+)/i.exec(entry.text)?.[1]?.toUpperCase() ?? mechanism
    if (entry._tag !== "Server") continue
    const code = Number(entry.text.slice(0, 3))
    if (code === 235) parts.push(`AUTH ${mechanism} accepted`)
    if (/^250 .*queued as/.test(entry.text)) accepted++
    if (code >= 400 && !refused.includes(entry.text)) refused.push(entry.text)
  }
  let body = -1
  entries.forEach((e, i) => {
    if (e._tag === "Client" && /^DATA$/i.test(e.text)) body = i
  })
  const dotAfter = body >= 0 && entries.slice(body).some((e) => e._tag === "Client" && e.text === ".")
  const bodyStarted = body >= 0 && entries.slice(body).some((e) => e._tag === "Server" && e.text.startsWith("354"))
  parts.push(`${accepted} message${accepted === 1 ? "" : "s"} accepted`)
  if (refused.length > 0) parts.push(`refused: ${refused.slice(0, 4).join(" | ")}`)
  if (bodyStarted && !dotAfter) parts.push("the client left during DATA")
  const closed = entries[entries.length - 1]
  if (closed?._tag === "Closed") parts.push(`closed by the ${closed.by}`)
  return parts.join("; ")
}

/** `20260115T103000Z` */
const stamp = (millis: number) => new Date(millis).toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")

/** Writes `data` as `dir/name`: a temp file, then a rename; readers never see half a file. */
const writeAtomically = (dir: string, name: string, data: string) =>
  Effect.tryPromise(async () => {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    const temp = path.join(dir, `.${name}.${crypto.randomBytes(6).toString("hex")}.tmp`)
    try {
      await fs.writeFile(temp, data, { mode: 0o600, flag: "wx" })
      await fs.rename(temp, path.join(dir, name))
    } catch (error) {
      await fs.rm(temp, { force: true })
      throw error
    }
  })

interface Open {
  readonly recording: Recording
  readonly remote: string
  readonly openedAt: number
}

export class Recorder extends Context.Service<Recorder, {
  /** Whether CAPTURE_DIR is set (when not, `open` never records). */
  readonly enabled: boolean
  /** A new connection: a tap when it is to be recorded (CAPTURE_SAMPLE_RATE, CAPTURE_CLIENTS), else undefined. */
  readonly open: (id: string, remoteAddress: string, remotePort: number) => ConnectionTap | undefined
  /** The connection closed: writes its transcript, unless CAPTURE_USERS leaves it out. */
  readonly close: (id: string, end: SessionEnd) => Effect.Effect<void>
}>()("smtp-gateway/capture/Recorder") {
  static readonly make = (config: GatewayConfigShape) =>
    Effect.gen(function*() {
      const clock = yield* Clock.Clock
      const random = yield* Random.Random
      const capture = config.capture
      const fromClient = capture.clients.length === 0 ? () => true : makeCidrMatcher(capture.clients)
      const users = new Set(capture.users.map((u) => u.toLowerCase()))
      const open = new Map<string, Open>()
      // writes still running when the gateway stops get a moment to finish
      const writes = yield* FiberSet.make()
      yield* Effect.addFinalizer(() => FiberSet.awaitEmpty(writes).pipe(Effect.timeoutOption("5 seconds")))

      const write = Effect.fn("Recorder.write")(function*(id: string, end: SessionEnd) {
        const session = open.get(id)
        if (session === undefined || Option.isNone(capture.dir)) return
        open.delete(id)
        if (users.size > 0 && (end.user === undefined || !users.has(end.user.toLowerCase()))) return
        const entries = session.recording.finish()
        const header = [
          "smtp-gateway session capture",
          `date: ${new Date(session.openedAt).toISOString()}`,
          `gateway: smtp-gateway ${version} (${config.smtp.hostname})`,
          `session: ${id}`,
          `client: ${session.remote}`,
          `ehlo: ${end.helo ?? "(none)"}`,
          `user: ${end.user ?? "(not authenticated)"}`,
          `body: ${capture.body === "keep" ? "kept (a body over MAX_MESSAGE_SIZE as its digest)" : "digest"}`,
          `what happened: ${summarize(entries)}`,
          "replies: the host name, client address, queue ids and retry delays are written as *"
        ]
        const text = print({ header, entries: entries.map((entry) => ({ line: 0, entry })) })
        yield* writeAtomically(capture.dir.value, `${stamp(session.openedAt)}-${id}.smtp`, text).pipe(
          Effect.catch((error) =>
            Effect.logWarning("session capture not written").pipe(
              Effect.annotateLogs({ capture_dir: capture.dir, error: String(error.cause) })
            )
          )
        )
      })

      return Recorder.of({
        enabled: Option.isSome(capture.dir),
        open: (id, remoteAddress, remotePort) => {
          if (Option.isNone(capture.dir) || !fromClient(remoteAddress)) return undefined
          if (capture.sampleRate < 1 && random.nextDoubleUnsafe() >= capture.sampleRate) return undefined
          const recording = new Recording(
            capture.body === "keep",
            config.limits.maxMessageSize,
            generalizer(config.smtp.hostname, remoteAddress)
          )
          open.set(id, { recording, remote: `${remoteAddress}:${remotePort}`, openedAt: clock.currentTimeMillisUnsafe() })
          return {
            client: (chunk) => recording.client(chunk),
            server: (payload) => recording.server(payload),
            tls: (detail) => recording.tls(detail)
          }
        },
        close: (id, end) =>
          Effect.suspend(() => open.has(id) ? FiberSet.run(writes, write(id, end)).pipe(Effect.asVoid) : Effect.void)
      })
    })

  /** From GatewayConfig: records when CAPTURE_DIR is set, does nothing otherwise. */
  static readonly layer = Layer.effect(
    Recorder,
    Effect.gen(function*() {
      return yield* Recorder.make(yield* GatewayConfig)
    })
  )
}

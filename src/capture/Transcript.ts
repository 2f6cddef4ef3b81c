/**
 * The `.smtp` transcript format (design.md §7, conventions.md #11-#12): `#` header lines, then one
 * `C:`/`S:` line per protocol line in wire order, and `--` event lines (TLS started, a body kept only
 * as its digest, who closed the connection). Pure: parse and print text, no IO, no sockets.
 */
import { Result, Schema } from "effect"

/** A line the client sent, exactly as on the wire (body lines dot-stuffed); `<redacted>` stands for an AUTH payload. */
export const ClientLine = Schema.TaggedStruct("Client", { text: Schema.String })
/** A line the server sent; `*` matches any run of characters on replay. */
export const ServerLine = Schema.TaggedStruct("Server", { text: Schema.String })
/** TLS started here (after the 220 to STARTTLS, or before the greeting on an implicit-TLS port). */
export const TlsStarted = Schema.TaggedStruct("TlsStarted", { detail: Schema.String })
/** The lines of a message body, kept only as their size and SHA-256 (CAPTURE_BODY=digest, or too large to keep). */
export const BodyDigest = Schema.TaggedStruct("BodyDigest", {
  /** Bytes of the message as received: dot-unstuffed, CRLF line ends, without the final dot. */
  size: Schema.Number,
  sha256: Schema.String
})
/** The connection ended; `by` says who closed it. */
export const Closed = Schema.TaggedStruct("Closed", { by: Schema.Literals(["client", "server"]) })

export const Entry = Schema.Union([ClientLine, ServerLine, TlsStarted, BodyDigest, Closed])
export type Entry = typeof Entry.Type

/** An entry with the 1-based line of the text it came from (0 when built in code). */
export interface Located {
  readonly line: number
  readonly entry: Entry
}

export interface Transcript {
  /** The `#` lines before the first entry, without the `# `. */
  readonly header: ReadonlyArray<string>
  readonly entries: ReadonlyArray<Located>
}

/** What stands for an AUTH payload or SASL continuation in a capture. */
export const redacted = "<redacted>"
/** An AUTH payload the gateway refused (535): replayed with credentials that must fail too. */
export const redactedInvalid = "<redacted-invalid>"

export class TranscriptError extends Schema.TaggedError<TranscriptError>()("TranscriptError", {
  line: Schema.Number,
  message: Schema.String
}) {}

const bodyPattern = /^-- body (\d+) bytes sha256:([0-9a-f]{64})$/
const tlsPattern = /^-- tls(?: (.*))?$/
const closedPattern = /^-- (client|server) closed$/

/** Reads transcript text: indentation, blank lines and `#` lines after the header are ignored. */
export const parse = (text: string): Result.Result<Transcript, TranscriptError> => {
  const header: Array<string> = []
  const entries: Array<Located> = []
  const rows = text.split(/\r?\n/)
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!.replace(/^\s+/, "")
    const line = i + 1
    if (row === "") continue
    if (row.startsWith("#")) {
      if (entries.length === 0) header.push(row.replace(/^#\s?/, ""))
      continue
    }
    const protocol = /^([CS]):(?: ?)(.*)$/.exec(row)
    if (protocol !== null) {
      const text = protocol[2]!
      entries.push({ line, entry: protocol[1] === "C" ? ClientLine.make({ text }) : ServerLine.make({ text }) })
      continue
    }
    const body = bodyPattern.exec(row)
    if (body !== null) {
      entries.push({ line, entry: BodyDigest.make({ size: Number(body[1]), sha256: body[2]! }) })
      continue
    }
    const tls = tlsPattern.exec(row)
    if (tls !== null) {
      entries.push({ line, entry: TlsStarted.make({ detail: tls[1] ?? "" }) })
      continue
    }
    const closed = closedPattern.exec(row)
    if (closed !== null) {
      entries.push({ line, entry: Closed.make({ by: closed[1] as "client" | "server" }) })
      continue
    }
    return Result.fail(
      new TranscriptError({
        line,
        message: `line ${line} is not a C:, S:, -- or # line: "${row.length > 80 ? row.slice(0, 80) + "…" : row}"`
      })
    )
  }
  return Result.succeed({ header, entries })
}

/** One entry as a line of text. */
export const printEntry = (entry: Entry): string => {
  switch (entry._tag) {
    case "Client":
      return entry.text === "" ? "C:" : `C: ${entry.text}`
    case "Server":
      return entry.text === "" ? "S:" : `S: ${entry.text}`
    case "TlsStarted":
      return entry.detail === "" ? "-- tls" : `-- tls ${entry.detail}`
    case "BodyDigest":
      return `-- body ${entry.size} bytes sha256:${entry.sha256}`
    case "Closed":
      return `-- ${entry.by} closed`
  }
}

/** The text of a transcript; `parse(print(t))` gives `t` back (line numbers aside). */
export const print = (transcript: Transcript): string =>
  [
    ...transcript.header.map((h) => (h === "" ? "#" : `# ${h}`)),
    ...transcript.entries.map(({ entry }) => printEntry(entry))
  ].join("\n") + "\n"

/** The value of a `key: value` header line, if any (`# proves: …`, `# client: …`). */
export const headerValue = (transcript: Transcript, key: string): string | undefined => {
  const prefix = `${key.toLowerCase()}:`
  const found = transcript.header.find((h) => h.toLowerCase().startsWith(prefix))
  return found === undefined ? undefined : found.slice(prefix.length).trim()
}

/** `s` as a regular expression that matches it literally. */
export const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** `*` matches any run of characters; everything else literally. */
export const matches = (pattern: string, line: string): boolean => {
  const source = pattern.split("*").map(escapeRegExp).join(".*")
  return new RegExp(`^${source}$`, "s").test(line)
}

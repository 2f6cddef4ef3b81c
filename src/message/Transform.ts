/**
 * Transform: pure steps from a parsed, validated message to what travels on: `toCanonical` (the JSON
 * of design.md §5) and `deliveryRaw` (the bytes in pieces, edited in the header section only; the body is never
 * re-encoded). No IO, no services. The byte-level header splitter here is shared with Parser.ts.
 */
import { DateTime, Option, Predicate, Result } from "effect"
import type { Envelope, SessionInfo } from "../domain/Envelope.ts"
import type { AddressRef, CanonicalMessage, Header, ParsedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"

/** What the steps know about the transaction besides the message itself. */
export interface TransformContext {
  /** The gateway id of this message (the `queued as` id). */
  readonly id: string
  /** When the final dot arrived, ISO 8601 (from Clock). */
  readonly receivedAt: string
  readonly principal: Principal
  readonly envelope: Envelope
  readonly session: SessionInfo
  /** The gateway's own name (SMTP_HOSTNAME). */
  readonly hostname: string
}

// ---------------------------------------------------------------------------------------------
// The header section as bytes
// ---------------------------------------------------------------------------------------------

/** One header field as received: its first line and continuation lines, line endings included. */
export interface RawField extends Header {
  readonly raw: Uint8Array
}

export interface HeaderSection {
  readonly fields: ReadonlyArray<RawField>
  /** Where the blank line that ends the header section starts (`raw.length` when there is none). */
  readonly bodyOffset: number
}

const LF = 0x0a
const CR = 0x0d
const SP = 0x20
const HTAB = 0x09
const COLON = 0x3a

const utf8 = new TextDecoder("utf-8")
const latin1 = new TextDecoder("latin1")
const encoder = new TextEncoder()

/** Unfolds a header value: each line break with the white space after it becomes one space. */
const unfold = (value: string): string => value.replace(/\r?\n[ \t]+/g, " ").trim()

/** The end of the field name when `line` starts a header field (`Name:` or obsolete `Name :`), else -1. */
const fieldNameEnd = (raw: Uint8Array, start: number, end: number): number => {
  let i = start
  while (i < end && raw[i]! >= 0x21 && raw[i]! <= 0x7e && raw[i] !== COLON) i++
  const nameEnd = i
  if (nameEnd === start) return -1
  while (i < end && (raw[i] === SP || raw[i] === HTAB)) i++
  return i < end && raw[i] === COLON ? nameEnd : -1
}

/**
 * Splits `raw` into its header fields and the offset of the rest (blank line and body). Fails with a
 * short reason when there is no header section (empty input, or a first line that is not a field)
 * or a line inside it is neither a field nor a continuation.
 */
export const splitHeaderSection = (raw: Uint8Array): Result.Result<HeaderSection, string> => {
  const fields: Array<RawField> = []
  let field: { start: number; nameEnd: number; end: number } | undefined
  const close = () => {
    if (field === undefined) return
    const bytes = raw.subarray(field.start, field.end)
    const name = latin1.decode(raw.subarray(field.start, field.nameEnd))
    const afterColon = raw.indexOf(COLON, field.nameEnd) + 1
    fields.push({ name, value: unfold(utf8.decode(raw.subarray(afterColon, field.end))), raw: bytes })
    field = undefined
  }
  let pos = 0
  let line = 0
  while (pos < raw.length) {
    const lf = raw.indexOf(LF, pos)
    const next = lf === -1 ? raw.length : lf + 1
    const contentEnd = lf === -1 ? raw.length : lf > pos && raw[lf - 1] === CR ? lf - 1 : lf
    line++
    if (contentEnd === pos) {
      close()
      return fields.length === 0 ? Result.fail("no header section") : Result.succeed({ fields, bodyOffset: pos })
    }
    if (raw[pos] === SP || raw[pos] === HTAB) {
      if (field === undefined) return Result.fail("no header section")
      field.end = next
    } else {
      const nameEnd = fieldNameEnd(raw, pos, contentEnd)
      if (nameEnd === -1) {
        return Result.fail(fields.length === 0 && field === undefined ? "no header section" : `malformed header line ${line}`)
      }
      close()
      field = { start: pos, nameEnd, end: next }
    }
    pos = next
  }
  close()
  return fields.length === 0 ? Result.fail("no header section") : Result.succeed({ fields, bodyOffset: raw.length })
}

// ---------------------------------------------------------------------------------------------
// Header steps, shared by the canonical message and the delivered bytes
// ---------------------------------------------------------------------------------------------

/** One step over the header fields; steps keep the fields they do not touch as they are. */
export type HeaderStep = (headers: ReadonlyArray<Header>, context: TransformContext) => ReadonlyArray<Header>

/** A test for header fields of one name; `name` in lower case. */
export const named = (name: string) => (header: Header): boolean => header.name.toLowerCase() === name
export const isBcc = named("bcc")
const isMessageId = named("message-id")

/** The Message-ID the gateway gives a message that has none. */
export const generatedMessageId = (context: TransformContext): string => `<${context.id}@${context.hostname}>`

const hasMessageId = (headers: ReadonlyArray<Header>) =>
  headers.some((header) => isMessageId(header) && header.value !== "")

/** RFC 5322 date-time of an ISO instant: `Tue, 01 Jul 2025 10:00:00 +0000`. */
const rfc5322Date = (iso: string): string =>
  DateTime.toDateUtc(DateTime.makeUnsafe(iso)).toUTCString().replace(/GMT$/, "+0000")

// what a client sent as HELO, made safe to stand inside a Received field
const safeToken = (value: string): string => value.replace(/[^\x21-\x7e]|[()\\]/g, "?") || "unknown"

/** The Received field the gateway adds: the same in the canonical headers and in the delivered bytes. */
export const receivedHeader = (context: TransformContext): Header => {
  const protocol = Option.isSome(context.session.tls) ? "ESMTPSA" : "ESMTPA"
  return {
    name: "Received",
    value: `from ${safeToken(context.session.helo)} (${safeToken(context.session.remoteAddress)})` +
      ` by ${safeToken(context.hostname)} with ${protocol} id ${safeToken(context.id)}; ${rfc5322Date(context.receivedAt)}`
  }
}

const stripBcc: HeaderStep = (headers) => headers.filter((header) => !isBcc(header))

const addMessageId: HeaderStep = (headers, context) =>
  hasMessageId(headers) ? headers : [{ name: "Message-ID", value: generatedMessageId(context) }, ...headers]

const addReceived: HeaderStep = (headers, context) => [receivedHeader(context), ...headers]

/** In order: the Received field ends up first, a generated Message-ID second. */
const headerSteps: ReadonlyArray<HeaderStep> = [stripBcc, addMessageId, addReceived]

const applyHeaderSteps = (headers: ReadonlyArray<Header>, context: TransformContext): ReadonlyArray<Header> =>
  headerSteps.reduce((acc, step) => step(acc, context), headers)

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/** A header field on the wire, folded at spaces to keep lines within 78 characters where it can. */
export const foldHeader = (header: Header): string => {
  const lines: Array<string> = []
  let current = `${header.name}:`
  let wordsOnLine = 0
  for (const word of header.value.replace(/[\r\n]+/g, " ").split(" ")) {
    if (wordsOnLine > 0 && current.length + 1 + word.length > 78) {
      lines.push(current)
      current = ""
      wordsOnLine = 0
    }
    current += ` ${word}`
    wordsOnLine++
  }
  lines.push(current)
  return lines.join("\r\n") + "\r\n"
}

const isRawField = (header: Header): header is RawField =>
  Predicate.hasProperty(header, "raw") && header.raw instanceof Uint8Array

/**
 * The bytes that travel on, in order: the header section with every Bcc field (continuation lines
 * included) removed, a Received field first and a Message-ID when the message had none; then the
 * blank line and body exactly as received, a view of `raw` (a large message is not copied).
 */
export const deliveryRaw = (raw: Uint8Array, context: TransformContext): ReadonlyArray<Uint8Array> => {
  const section = Result.getOrElse(splitHeaderSection(raw), (): HeaderSection => ({ fields: [], bodyOffset: 0 }))
  const fields = applyHeaderSteps(section.fields, context).map((header) =>
    isRawField(header) ? header.raw : encoder.encode(foldHeader(header))
  )
  return [...fields, raw.subarray(section.bodyOffset)]
}

const address = (ref: AddressRef) => ({ address: ref.address, name: ref.name })

/**
 * The canonical message (design.md §5). `parsed` has passed the Validator, so it has exactly one
 * From address; should it have none, the envelope sender stands in rather than a missing key.
 */
export const toCanonical = (parsed: ParsedMessage, context: TransformContext): CanonicalMessage => ({
  id: context.id,
  received_at: context.receivedAt,
  principal: { username: context.principal.username },
  envelope: { mail_from: context.envelope.mailFrom, rcpt_to: [...context.envelope.rcptTo] },
  message_id: parsed.messageId ?? generatedMessageId(context),
  date: parsed.date,
  from: parsed.from[0] !== undefined ? address(parsed.from[0]) : { address: context.envelope.mailFrom, name: null },
  reply_to: parsed.replyTo.map(address),
  to: parsed.to.map(address),
  cc: parsed.cc.map(address),
  subject: parsed.subject,
  text: parsed.text,
  html: parsed.html,
  headers: applyHeaderSteps(parsed.headers, context).map((header) => ({ name: header.name, value: header.value })),
  attachments: parsed.attachments.map((attachment) => ({
    filename: attachment.filename,
    content_type: attachment.contentType,
    size: attachment.size,
    content_id: attachment.contentId,
    disposition: attachment.disposition,
    content_base64: attachment.content
  })),
  in_reply_to: parsed.inReplyTo,
  references: [...parsed.references]
})

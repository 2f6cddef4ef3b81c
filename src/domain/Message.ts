/**
 * A message at each stage of the DATA path:
 * - `ReceivedMessage`: the bytes exactly as received (after dot-unstuffing), with their size and digest;
 * - `ParsedMessage`: what the parser read from them (message/Parser.ts);
 * - `CanonicalMessage`: the JSON every upstream receives (design.md §5), built by message/Transform.ts.
 * Pure data and schemas.
 */
import { Schema } from "effect"

export interface ReceivedMessage {
  /** The message as received, line endings CRLF, dot-unstuffed. */
  readonly raw: Uint8Array
  readonly size: number
  /** Lower-case hex SHA-256 of `raw`. */
  readonly sha256: string
}

export interface AddressRef {
  readonly address: string
  readonly name: string | null
}

export interface Header {
  readonly name: string
  readonly value: string
}

/**
 * An attachment still in base64, as it arrived: bytes `start` to `end` of the received message, CRLF
 * line breaks included. The parse worker checked that it is plain, canonical base64 (ParseWorker.ts), so
 * without its line breaks it is exactly the base64 of its `size` bytes: it travels on as that text, never
 * decoded and encoded again.
 */
export class ReceivedBase64 {
  constructor(
    readonly message: Uint8Array,
    readonly start: number,
    readonly end: number,
    /** The decoded size. */
    readonly size: number
  ) {}

  /** Characters of base64 text (padding included, line breaks not). */
  get length(): number {
    return 4 * Math.ceil(this.size / 3)
  }

  /** The text without its line breaks, in fresh buffers of `sliceBytes` (the last one shorter). */
  *slices(sliceBytes = 48 * 1024): Generator<Uint8Array> {
    const source = Buffer.from(this.message.buffer, this.message.byteOffset, this.message.byteLength)
    let left = this.length
    let slice = Buffer.alloc(Math.min(sliceBytes, left))
    let filled = 0
    for (let at = this.start; at < this.end;) {
      const lf = source.indexOf(0x0a, at)
      const lineEnd = lf < 0 || lf >= this.end ? this.end : lf - 1 // before the CR of CRLF
      while (at < lineEnd && left > 0) {
        const n = Math.min(lineEnd - at, slice.length - filled)
        filled += source.copy(slice, filled, at, at + n)
        at += n
        if (filled === slice.length) {
          yield slice
          left -= filled
          slice = Buffer.alloc(Math.min(sliceBytes, left))
          filled = 0
        }
      }
      at = lineEnd === this.end ? this.end : lf + 1
    }
    if (filled > 0) yield slice.subarray(0, filled)
  }

  /** The whole text at once. */
  text(): string {
    return Buffer.concat([...this.slices()]).toString("latin1")
  }

  /** `JSON.stringify` writes the text (never the message it lies in). */
  toJSON(): string {
    return this.text()
  }
}

/** An attachment's bytes: decoded, or still the base64 text they arrived as. */
export type AttachmentContent = Uint8Array | ReceivedBase64

export interface ParsedAttachment {
  readonly filename: string | null
  readonly contentType: string
  readonly size: number
  readonly contentId: string | null
  readonly disposition: "attachment" | "inline"
  readonly content: AttachmentContent
}

export interface ParsedMessage {
  readonly messageId: string | null
  /** ISO 8601, when the Date header parsed. */
  readonly date: string | null
  /** Every address of every From header: exactly one is valid for submission. */
  readonly from: ReadonlyArray<AddressRef>
  readonly replyTo: ReadonlyArray<AddressRef>
  readonly to: ReadonlyArray<AddressRef>
  readonly cc: ReadonlyArray<AddressRef>
  readonly subject: string | null
  readonly text: string | null
  readonly html: string | null
  /** Header lines in their original order, unfolded, values as sent (encoded words kept). Bcc is never here. */
  readonly headers: ReadonlyArray<Header>
  readonly attachments: ReadonlyArray<ParsedAttachment>
  readonly inReplyTo: string | null
  readonly references: ReadonlyArray<string>
}

export const CanonicalAddress = Schema.Struct({
  address: Schema.String,
  name: Schema.NullOr(Schema.String)
})

export const CanonicalAttachment = Schema.Struct({
  filename: Schema.NullOr(Schema.String),
  content_type: Schema.String,
  size: Schema.Int,
  content_id: Schema.NullOr(Schema.String),
  disposition: Schema.Literals(["attachment", "inline"]),
  /**
   * Base64 on the wire. In the gateway, bytes encoded only as they are sent (delivery/JsonBody.ts), or the
   * base64 text they arrived as, which encodes as itself and which JSON.stringify writes as its text. A
   * base64 string decodes to bytes.
   */
  content_base64: Schema.Union([Schema.Uint8ArrayFromBase64, Schema.instanceOf(ReceivedBase64)])
})

/** The canonical message of design.md §5: every key always present, `null` or `[]` when absent. */
export const CanonicalMessage = Schema.Struct({
  id: Schema.String,
  received_at: Schema.String,
  principal: Schema.Struct({ username: Schema.String }),
  envelope: Schema.Struct({
    mail_from: Schema.String,
    rcpt_to: Schema.Array(Schema.String)
  }),
  message_id: Schema.String,
  date: Schema.NullOr(Schema.String),
  from: CanonicalAddress,
  reply_to: Schema.Array(CanonicalAddress),
  to: Schema.Array(CanonicalAddress),
  cc: Schema.Array(CanonicalAddress),
  subject: Schema.NullOr(Schema.String),
  text: Schema.NullOr(Schema.String),
  html: Schema.NullOr(Schema.String),
  headers: Schema.Array(Schema.Struct({ name: Schema.String, value: Schema.String })),
  attachments: Schema.Array(CanonicalAttachment),
  in_reply_to: Schema.NullOr(Schema.String),
  references: Schema.Array(Schema.String)
})
export type CanonicalMessage = typeof CanonicalMessage.Type

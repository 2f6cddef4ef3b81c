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

export interface ParsedAttachment {
  readonly filename: string | null
  readonly contentType: string
  readonly size: number
  readonly contentId: string | null
  readonly disposition: "attachment" | "inline"
  readonly content: Uint8Array
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
  /** Bytes in the gateway, base64 on the wire: encoded only as they are sent (delivery/JsonBody.ts). */
  content_base64: Schema.Uint8ArrayFromBase64
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

/**
 * Shared values for the delivery tests: a principal and a delivery request for a small message.
 * Test data only.
 */
import * as crypto from "node:crypto"
import { Option, Redacted, Schema } from "effect"
import type { DeliveryRequest } from "../../src/delivery/Delivery.ts"
import { jsonBody } from "../../src/delivery/JsonBody.ts"
import { Mailbox } from "../../src/domain/Address.ts"
import type { CanonicalMessage } from "../../src/domain/Message.ts"
import { Principal } from "../../src/domain/Principal.ts"

export const mailbox = Schema.decodeUnknownSync(Mailbox)

export const alice = new Principal({
  username: "alice",
  senders: Option.some(["alice@example.com"]),
  apiKey: Option.some(Redacted.make("key-alice-123")),
  backend: "file",
  account: Option.none(),
  expiresAt: Option.none()
})

const raw = new TextEncoder().encode(
  "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: Hello\r\nMessage-ID: <m1@example.com>\r\n\r\nHi Bob\r\n"
)

export const canonical = (id: string, recipients: ReadonlyArray<string>): CanonicalMessage => ({
  id,
  received_at: "2026-01-02T03:04:05.000Z",
  principal: { username: "alice" },
  envelope: { mail_from: "alice@example.com", rcpt_to: recipients },
  message_id: "<m1@example.com>",
  date: null,
  from: { address: "alice@example.com", name: "Alice" },
  reply_to: [],
  to: [{ address: "bob@example.net", name: null }],
  cc: [],
  subject: "Hello",
  text: "Hi Bob\n",
  html: null,
  headers: [{ name: "Subject", value: "Hello" }],
  attachments: [],
  in_reply_to: null,
  references: []
})

export const request = (
  recipients: ReadonlyArray<string> = ["bob@example.net"],
  overrides: Partial<DeliveryRequest> = {}
): DeliveryRequest => ({
  id: "0ABCDEF12XYZ",
  sessionId: "session-1",
  startedAt: 0,
  messageId: "<m1@example.com>",
  message: canonical(overrides.id ?? "0ABCDEF12XYZ", recipients),
  received: { raw, size: raw.length, sha256: crypto.createHash("sha256").update(raw).digest("hex") },
  raw: [raw],
  principal: alice,
  recipients: recipients.map((r) => mailbox(r)),
  ...overrides
})

/** The whole JSON body an upstream call sends, as one string (to compare with JSON.stringify). */
export const jsonText = (value: unknown): string =>
  Buffer.concat([...jsonBody(value).chunks()]).toString("utf8")

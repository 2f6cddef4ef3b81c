import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { ReceivedBase64, type ReceivedMessage } from "../../src/domain/Message.ts"
import { contentBytes } from "../support/Attachments.ts"
import { Parser } from "../../src/message/Parser.ts"
import { withAttachment } from "./fixtures.ts"

/** A fixture from test/fixtures/messages, as the gateway would have received it. */
const fixture = (name: string): Uint8Array =>
  new Uint8Array(readFileSync(new URL(`../fixtures/messages/${name}`, import.meta.url)))

const received = (raw: Uint8Array | string): ReceivedMessage => {
  const bytes = typeof raw === "string" ? new TextEncoder().encode(raw) : raw
  return { raw: bytes, size: bytes.length, sha256: "" }
}

const parse = (raw: Uint8Array | string) => Parser.use((parser) => parser.parse(received(raw)))

// The bytes base64-encoded into attachments.eml.
const pdfBytes = new Uint8Array([
  ...new TextEncoder().encode("%PDF-1.4\n%"),
  ...Array.from({ length: 256 }, (_, i) => i),
  ...new TextEncoder().encode("\n%%EOF\n")
])
const chartPng = new Uint8Array(Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
  "base64"
))
const logoPng = new Uint8Array(Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==",
  "base64"
))

layer(Parser.layer)("Parser", (it) => {
  it.effect("reads every field of a plain text message", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("plain.eml"))
      assert.strictEqual(parsed.messageId, "<plain-1@example.test>")
      assert.strictEqual(parsed.date, "2025-07-01T08:00:00.000Z")
      assert.deepStrictEqual(parsed.from, [{ address: "alice@example.test", name: "Alice Example" }])
      assert.deepStrictEqual(parsed.replyTo, [{ address: "replies@example.test", name: "Alice Replies" }])
      assert.deepStrictEqual(parsed.to, [
        { address: "bob@example.net", name: "Bob" },
        { address: "carol@example.net", name: null }
      ])
      assert.deepStrictEqual(parsed.cc, [{ address: "dave@example.org", name: "Dave, D." }])
      assert.strictEqual(parsed.subject, "Quarterly numbers")
      assert.strictEqual(parsed.text, "Hi Bob,\n\nthe quarterly numbers look fine.\n\nAlice\n")
      assert.isNull(parsed.html)
      assert.deepStrictEqual(parsed.attachments, [])
      assert.strictEqual(parsed.inReplyTo, "<thread-0@example.test>")
      assert.deepStrictEqual(parsed.references, ["<thread-root@example.test>", "<thread-0@example.test>"])
    }))

  it.effect("keeps the header lines in order, unfolded, with names as written", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("plain.eml"))
      assert.deepStrictEqual(parsed.headers, [
        { name: "Return-Path", value: "<alice@example.test>" },
        { name: "Message-ID", value: "<plain-1@example.test>" },
        { name: "Date", value: "Tue, 1 Jul 2025 10:00:00 +0200 (CEST)" },
        { name: "From", value: "Alice Example <alice@example.test>" },
        { name: "Reply-To", value: "Alice Replies <replies@example.test>" },
        { name: "To", value: "Bob <bob@example.net>, carol@example.net" },
        { name: "Cc", value: "\"Dave, D.\" <dave@example.org>" },
        { name: "Subject", value: "Quarterly numbers" },
        { name: "In-Reply-To", value: "<thread-0@example.test>" },
        { name: "References", value: "<thread-root@example.test> <thread-0@example.test>" },
        { name: "MIME-Version", value: "1.0" },
        { name: "Content-Type", value: "text/plain; charset=us-ascii" },
        { name: "Content-Transfer-Encoding", value: "7bit" }
      ])
    }))

  it.effect("reads both bodies of a multipart/alternative message and flattens an address group", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("alternative.eml"))
      assert.strictEqual(parsed.text, "Hello in plain text, price: 10 €.")
      assert.strictEqual(parsed.html, "<p style=\"color:red\">Hello in <b>HTML</b>, price: 10 €.</p>")
      assert.deepStrictEqual(parsed.from, [{ address: "news@example.test", name: "Newsletter" }])
      assert.deepStrictEqual(parsed.to, [
        { address: "erin@example.net", name: null },
        { address: "frank@example.net", name: "Frank" }
      ])
      assert.strictEqual(parsed.date, "2025-07-02T15:30:00.000Z")
      assert.deepStrictEqual(parsed.attachments, [])
    }))

  it.effect("returns attachments and the inline image byte for byte", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("attachments.eml"))
      assert.isNull(parsed.text)
      assert.strictEqual(
        parsed.html,
        "<html><body><img src=\"cid:logo@example.test\"><p>See the report.</p></body></html>"
      )
      // each attachment's plain base64 stays the text it arrived as
      for (const attachment of parsed.attachments) assert.instanceOf(attachment.content, ReceivedBase64)
      assert.deepStrictEqual(parsed.attachments.map(({ content, ...rest }) => ({ ...rest, content: contentBytes(content) })), [
        {
          filename: "logo.png",
          contentType: "image/png",
          size: logoPng.length,
          contentId: "logo@example.test",
          disposition: "inline",
          content: logoPng
        },
        {
          filename: "report.pdf",
          contentType: "application/pdf",
          size: pdfBytes.length,
          contentId: null,
          disposition: "attachment",
          content: pdfBytes
        },
        {
          filename: "chart.png",
          contentType: "image/png",
          size: chartPng.length,
          contentId: null,
          disposition: "attachment",
          content: chartPng
        }
      ])
    }))

  it.effect("returns an attachment larger than a parse worker's young generation byte for byte", () =>
    Effect.gen(function*() {
      const content = Buffer.alloc(16 * 1024 * 1024)
      for (let i = 0; i < content.length; i += 4) content.writeUInt32LE((i * 2654435761) >>> 0, i)
      const parsed = yield* parse(withAttachment(content))
      assert.strictEqual(parsed.attachments.length, 1)
      assert.strictEqual(parsed.attachments[0]!.size, content.length)
      assert.instanceOf(parsed.attachments[0]!.content, ReceivedBase64)
      assert.isTrue(Buffer.from(contentBytes(parsed.attachments[0]!.content)).equals(content))
    }))

  it.effect("decodes an RFC 2047 subject and an 8bit UTF-8 body, and keeps encoded words in headers", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("utf8-8bit.eml"))
      assert.strictEqual(parsed.subject, "Grüße – Übersicht ✓")
      assert.deepStrictEqual(parsed.from, [{ address: "juergen@example.test", name: "Jürgen Müller" }])
      assert.strictEqual(parsed.text, "Grüße aus Köln — 日本語のテキスト\nÜnïcödé ✓\n")
      assert.deepStrictEqual(
        parsed.headers.find((header) => header.name === "Subject"),
        { name: "Subject", value: "=?UTF-8?B?R3LDvMOfZSDigJMgw5xiZXJzaWNodCDinJM=?=" }
      )
    }))

  it.effect("reads raw UTF-8 header values (SMTPUTF8)", () =>
    Effect.gen(function*() {
      const parsed = yield* parse("From: Zoë <zoë@example.test>\r\nSubject: Grüße\r\n\r\nhi\r\n")
      assert.strictEqual(parsed.subject, "Grüße")
      assert.deepStrictEqual(parsed.headers, [
        { name: "From", value: "Zoë <zoë@example.test>" },
        { name: "Subject", value: "Grüße" }
      ])
      assert.deepStrictEqual(parsed.from, [{ address: "zoë@example.test", name: "Zoë" }])
    }))

  it.effect("gives null for a missing Message-ID and Date", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("no-message-id.eml"))
      assert.isNull(parsed.messageId)
      assert.isNull(parsed.date)
      assert.isNull(parsed.inReplyTo)
      assert.deepStrictEqual(parsed.references, [])
      assert.deepStrictEqual(parsed.replyTo, [])
      assert.deepStrictEqual(parsed.cc, [])
      assert.deepStrictEqual(parsed.from, [{ address: "alice@example.test", name: null }])
    }))

  it.effect("gives null for a Date that does not parse, rather than the current time", () =>
    Effect.gen(function*() {
      const parsed = yield* parse("From: a@example.test\r\nDate: next Tuesday-ish\r\n\r\nhi\r\n")
      assert.isNull(parsed.date)
    }))

  it.effect("reads an obsolete zone and a Date without a zone as UTC", () =>
    Effect.gen(function*() {
      const est = yield* parse("From: a@example.test\r\nDate: Tue, 1 Jul 2025 10:00:00 EST\r\n\r\nhi\r\n")
      assert.strictEqual(est.date, "2025-07-01T15:00:00.000Z")
      const bare = yield* parse("From: a@example.test\r\nDate: Tue, 1 Jul 2025 10:00:00\r\n\r\nhi\r\n")
      assert.strictEqual(bare.date, "2025-07-01T10:00:00.000Z")
    }))

  it.effect("reports every address of every From field", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("two-from.eml"))
      assert.deepStrictEqual(parsed.from, [
        { address: "alice@example.test", name: "Alice" },
        { address: "mallory@example.test", name: "Mallory" }
      ])
      const oneField = yield* parse("From: a@example.test, B <b@example.test>\r\n\r\nhi\r\n")
      assert.deepStrictEqual(oneField.from, [
        { address: "a@example.test", name: null },
        { address: "b@example.test", name: "B" }
      ])
      const folded = yield* parse("From: a@example.test\r\nFROM : B\r\n <b@example.test>\r\n\r\nhi\r\n")
      assert.deepStrictEqual(folded.from, [
        { address: "a@example.test", name: null },
        { address: "b@example.test", name: "B" }
      ])
    }))

  it.effect("never reports a Bcc header, even one folded over two lines", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("bcc-folded.eml"))
      assert.deepStrictEqual(parsed.headers.map((header) => header.name), ["Message-ID", "From", "To", "Subject"])
      assert.notInclude(JSON.stringify(parsed), "hidden-")
      const lowerCase = yield* parse("From: a@example.test\r\nbcc: x@example.net\r\n\r\nhi\r\n")
      assert.deepStrictEqual(lowerCase.headers, [{ name: "From", value: "a@example.test" }])
    }))

  it.effect("rejects a message without a header section", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(parse(fixture("malformed.eml")))
      assert.strictEqual(error._tag, "MessageRejected")
      assert.strictEqual(error.reason, "no header section")
      assert.strictEqual(error.reply.toString(), "554 5.6.0 Message rejected: no header section")
    }))

  it.effect.each([
    ["an empty message", "", "no header section"],
    ["a message that starts with a blank line", "\r\nbody\r\n", "no header section"],
    ["a message that starts with a continuation line", " folded\r\nFrom: a@example.test\r\n\r\n", "no header section"],
    ["a header line without a colon", "From: a@example.test\r\nHello Bob,\r\n\r\nbody\r\n", "malformed header line 2"]
  ] as const)("rejects %s", ([, raw, reason]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(parse(raw))
      assert.strictEqual(error.reason, reason)
    }))

  it.effect("reads a message that is only a header section", () =>
    Effect.gen(function*() {
      const parsed = yield* parse("From: a@example.test\r\nSubject: empty")
      assert.deepStrictEqual(parsed.headers, [
        { name: "From", value: "a@example.test" },
        { name: "Subject", value: "empty" }
      ])
      assert.isNull(parsed.text)
    }))
})

describe("Parser timeout", () => {
  it.live("rejects a message it cannot parse within the time limit", () =>
    Effect.gen(function*() {
      const big = "From: a@example.test\r\nContent-Type: application/octet-stream\r\n" +
        "Content-Transfer-Encoding: base64\r\n\r\n" + "QUJD".repeat(19).concat("\r\n").repeat(100_000)
      const error = yield* Effect.flip(parse(big).pipe(Effect.provide(Parser.layerWith({ timeout: "1 millis" }))))
      assert.strictEqual(error.reason, "the message could not be parsed in time")
    }))
})

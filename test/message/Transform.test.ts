import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Option, Result, Schema } from "effect"
import { readFileSync } from "node:fs"
import { Mailbox } from "../../src/domain/Address.ts"
import { Envelope, SessionInfo } from "../../src/domain/Envelope.ts"
import { CanonicalMessage, ReceivedBase64 } from "../../src/domain/Message.ts"
import { contentBytes } from "../support/Attachments.ts"
import { jsonText } from "../delivery/fixtures.ts"
import { Principal } from "../../src/domain/Principal.ts"
import { Parser } from "../../src/message/Parser.ts"
import {
  deliveryRaw as deliveryPieces,
  foldHeader,
  receivedHeader,
  splitHeaderSection,
  toCanonical,
  type TransformContext
} from "../../src/message/Transform.ts"

const fixture = (name: string): Uint8Array =>
  new Uint8Array(readFileSync(new URL(`../fixtures/messages/${name}`, import.meta.url)))

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
/** The delivered bytes, joined. */
const deliveryRaw = (raw: Uint8Array, context: TransformContext) => new Uint8Array(Buffer.concat(deliveryPieces(raw, context)))
const bytes = (s: string) => new TextEncoder().encode(s)
const mailbox = Schema.decodeSync(Mailbox)

const context = (overrides: Partial<TransformContext> = {}): TransformContext => ({
  id: "0MCQ1X2Y3ABCDEFGHIJ",
  receivedAt: "2025-07-05T10:20:30.000Z",
  principal: new Principal({
    username: "alice",
    senders: Option.none(),
    apiKey: Option.none(),
    backend: "file",
    account: Option.none(),
    expiresAt: Option.none()
  }),
  envelope: new Envelope({
    mailFrom: mailbox("alice@example.test"),
    rcptTo: [mailbox("bob@example.net"), mailbox("hidden-one@example.net"), mailbox("hidden-two@example.net")],
    bodyType: "8BITMIME"
  }),
  session: new SessionInfo({
    id: "session-1",
    remoteAddress: "192.0.2.10",
    remotePort: 50123,
    helo: "client.example.test",
    tls: Option.some({ protocol: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384" })
  }),
  hostname: "mx.gateway.test",
  ...overrides
})

const parse = (raw: Uint8Array) => Parser.use((parser) => parser.parse({ raw, size: raw.length, sha256: "" }))

const canonicalOf = (name: string, ctx = context()) =>
  Effect.map(parse(fixture(name)), (parsed) => toCanonical(parsed, ctx))

const received =
  "from client.example.test (192.0.2.10) by mx.gateway.test with ESMTPSA id 0MCQ1X2Y3ABCDEFGHIJ; Sat, 05 Jul 2025 10:20:30 +0000"

const canonicalKeys = [
  "id",
  "received_at",
  "principal",
  "envelope",
  "message_id",
  "date",
  "from",
  "reply_to",
  "to",
  "cc",
  "subject",
  "text",
  "html",
  "headers",
  "attachments",
  "in_reply_to",
  "references"
]

const fixtures = [
  "plain.eml",
  "alternative.eml",
  "attachments.eml",
  "utf8-8bit.eml",
  "no-message-id.eml",
  "two-from.eml",
  "bcc-folded.eml"
]

/** The body (blank line onwards) of a message, as bytes. */
const bodyOf = (raw: Uint8Array) => {
  const section = splitHeaderSection(raw)
  return Result.isSuccess(section) ? raw.subarray(section.success.bodyOffset) : raw
}

layer(Parser.layer)("Transform", (it) => {
  it.effect.each([
    {
      fixture: "plain.eml",
      message_id: "<plain-1@example.test>",
      date: "2025-07-01T08:00:00.000Z",
      from: { address: "alice@example.test", name: "Alice Example" },
      subject: "Quarterly numbers",
      to: ["bob@example.net", "carol@example.net"],
      cc: ["dave@example.org"],
      reply_to: ["replies@example.test"],
      hasText: true,
      hasHtml: false,
      attachments: [],
      in_reply_to: "<thread-0@example.test>",
      references: ["<thread-root@example.test>", "<thread-0@example.test>"]
    },
    {
      fixture: "alternative.eml",
      message_id: "<alt-1@example.test>",
      date: "2025-07-02T15:30:00.000Z",
      from: { address: "news@example.test", name: "Newsletter" },
      subject: "Text and HTML",
      to: ["erin@example.net", "frank@example.net"],
      cc: [],
      reply_to: [],
      hasText: true,
      hasHtml: true,
      attachments: [],
      in_reply_to: null,
      references: []
    },
    {
      fixture: "attachments.eml",
      message_id: "<att-1@example.test>",
      date: "2025-07-03T12:00:00.000Z",
      from: { address: "reports@example.test", name: "Reports" },
      subject: "Report with attachments",
      to: ["bob@example.net"],
      cc: [],
      reply_to: [],
      hasText: false,
      hasHtml: true,
      attachments: ["logo.png", "report.pdf", "chart.png"],
      in_reply_to: null,
      references: []
    },
    {
      fixture: "utf8-8bit.eml",
      message_id: "<utf8-1@example.test>",
      date: "2025-07-04T07:15:00.000Z",
      from: { address: "juergen@example.test", name: "Jürgen Müller" },
      subject: "Grüße – Übersicht ✓",
      to: ["anna@example.net"],
      cc: [],
      reply_to: [],
      hasText: true,
      hasHtml: false,
      attachments: [],
      in_reply_to: null,
      references: []
    },
    {
      fixture: "no-message-id.eml",
      message_id: "<0MCQ1X2Y3ABCDEFGHIJ@mx.gateway.test>",
      date: null,
      from: { address: "alice@example.test", name: null },
      subject: "No id, no date",
      to: ["bob@example.net"],
      cc: [],
      reply_to: [],
      hasText: true,
      hasHtml: false,
      attachments: [],
      in_reply_to: null,
      references: []
    }
  ])("builds the canonical fields of $fixture", (expected) =>
    Effect.gen(function*() {
      const canonical = yield* canonicalOf(expected.fixture)
      assert.strictEqual(canonical.message_id, expected.message_id)
      assert.strictEqual(canonical.date, expected.date)
      assert.deepStrictEqual(canonical.from, expected.from)
      assert.strictEqual(canonical.subject, expected.subject)
      assert.deepStrictEqual(canonical.to.map((a) => a.address), expected.to)
      assert.deepStrictEqual(canonical.cc.map((a) => a.address), expected.cc)
      assert.deepStrictEqual(canonical.reply_to.map((a) => a.address), expected.reply_to)
      assert.strictEqual(canonical.text !== null, expected.hasText)
      assert.strictEqual(canonical.html !== null, expected.hasHtml)
      assert.deepStrictEqual(canonical.attachments.map((a) => a.filename), expected.attachments)
      assert.strictEqual(canonical.in_reply_to, expected.in_reply_to)
      assert.deepStrictEqual(canonical.references, expected.references)
    }))

  it.effect("takes the id, time, principal and envelope from the context", () =>
    Effect.gen(function*() {
      const canonical = yield* canonicalOf("plain.eml")
      assert.strictEqual(canonical.id, "0MCQ1X2Y3ABCDEFGHIJ")
      assert.strictEqual(canonical.received_at, "2025-07-05T10:20:30.000Z")
      assert.deepStrictEqual(canonical.principal, { username: "alice" })
      assert.deepStrictEqual(canonical.envelope, {
        mail_from: "alice@example.test",
        rcpt_to: ["bob@example.net", "hidden-one@example.net", "hidden-two@example.net"]
      })
    }))

  it.effect.each(fixtures)("keeps every key of the canonical message present for %s", (name) =>
    Effect.gen(function*() {
      const canonical = yield* canonicalOf(name)
      const json = JSON.parse(jsonText(canonical))
      assert.sameMembers(Object.keys(json), canonicalKeys)
      Schema.decodeUnknownSync(CanonicalMessage)(json)
      for (const attachment of json.attachments) {
        assert.sameMembers(Object.keys(attachment), [
          "filename",
          "content_type",
          "size",
          "content_id",
          "disposition",
          "content_base64"
        ])
      }
    }))

  it.effect("carries attachments as their exact bytes, sent as the base64 they arrived as", () =>
    Effect.gen(function*() {
      const parsed = yield* parse(fixture("attachments.eml"))
      const canonical = toCanonical(parsed, context())
      assert.deepStrictEqual(
        canonical.attachments.map((a) => [a.content_type, a.size, a.content_id, a.disposition]),
        [
          ["image/png", 70, "logo@example.test", "inline"],
          ["application/pdf", 273, null, "attachment"],
          ["image/png", 70, null, "attachment"]
        ]
      )
      const wire = JSON.parse(jsonText(canonical)) as { attachments: Array<{ content_base64: string }> }
      canonical.attachments.forEach((attachment, i) => {
        assert.strictEqual(attachment.content_base64, parsed.attachments[i]!.content, "the parser's content, not a copy")
        assert.instanceOf(attachment.content_base64, ReceivedBase64)
        // exactly the base64 of the bytes: no line breaks, as JSON.stringify of the bytes' base64 would give
        assert.strictEqual(
          wire.attachments[i]!.content_base64,
          Buffer.from(contentBytes(parsed.attachments[i]!.content)).toString("base64")
        )
      })
    }))

  it.effect("puts the Received header first, ESMTPSA after TLS and ESMTPA without", () =>
    Effect.gen(function*() {
      const canonical = yield* canonicalOf("plain.eml")
      assert.deepStrictEqual(canonical.headers[0], { name: "Received", value: received })
      assert.deepStrictEqual(canonical.headers[1], { name: "Return-Path", value: "<alice@example.test>" })
      const plainText = context({ session: new SessionInfo({ ...context().session, tls: Option.none() }) })
      assert.include(receivedHeader(plainText).value, " with ESMTPA id ")
      const raw = text(deliveryRaw(fixture("plain.eml"), plainText))
      assert.match(raw, /^Received: from client\.example\.test \(192\.0\.2\.10\) by mx\.gateway\.test with ESMTPA\r\n id /)
    }))

  it.effect("generates a Message-ID only when the message has none, the same in both outputs", () =>
    Effect.gen(function*() {
      const raw = fixture("no-message-id.eml")
      const canonical = toCanonical(yield* parse(raw), context())
      const generated = "<0MCQ1X2Y3ABCDEFGHIJ@mx.gateway.test>"
      assert.strictEqual(canonical.message_id, generated)
      assert.deepStrictEqual(canonical.headers[1], { name: "Message-ID", value: generated })

      const delivered = deliveryRaw(raw, context())
      assert.include(text(delivered), `\r\nMessage-ID: ${generated}\r\nFrom: alice@example.test\r\n`)
      assert.strictEqual((yield* parse(delivered)).messageId, generated)

      const withId = fixture("plain.eml")
      const kept = text(deliveryRaw(withId, context()))
      assert.strictEqual(kept.match(/^message-id:/gim)?.length, 1)
      assert.strictEqual(toCanonical(yield* parse(withId), context()).headers.filter((h) => h.name === "Message-ID").length, 1)
    }))

  it.effect("strips a folded Bcc from both outputs and leaves every other byte in place", () =>
    Effect.gen(function*() {
      const raw = fixture("bcc-folded.eml")
      const canonical = toCanonical(yield* parse(raw), context())
      assert.notInclude(JSON.stringify({ ...canonical, envelope: null }), "hidden-")
      assert.isFalse(canonical.headers.some((h) => h.name.toLowerCase() === "bcc"))

      const delivered = text(deliveryRaw(raw, context()))
      const expected = text(raw).replace("Bcc: hidden-one@example.net,\r\n\thidden-two@example.net\r\n", "")
      assert.notStrictEqual(expected, text(raw))
      assert.strictEqual(
        delivered,
        "Received: from client.example.test (192.0.2.10) by mx.gateway.test with\r\n" +
          ` ESMTPSA id 0MCQ1X2Y3ABCDEFGHIJ; Sat, 05 Jul 2025 10:20:30 +0000\r\n${expected}`
      )
    }))

  it.effect("strips every Bcc field whatever its case or position", () =>
    Effect.sync(() => {
      const raw = bytes("bcc: a@example.net\r\nFrom: x@example.test\r\nBCC:\r\n\tb@example.net,\r\n c@example.net\r\n\r\nBcc: in the body stays\r\n")
      const delivered = text(deliveryRaw(raw, context()))
      assert.isTrue(delivered.endsWith("\r\nFrom: x@example.test\r\n\r\nBcc: in the body stays\r\n"))
      assert.notMatch(delivered, /@example\.net/)
    }))

  it.effect.each(fixtures)("never touches the body bytes of %s", (name) =>
    Effect.sync(() => {
      const raw = fixture(name)
      const delivered = deliveryRaw(raw, context())
      const body = bodyOf(raw)
      assert.isAbove(body.length, 0)
      assert.deepStrictEqual(delivered.subarray(delivered.length - body.length), body)
    }))

  it.effect("leaves the body where it arrived: the last piece is a view of the received bytes, not a copy", () =>
    Effect.sync(() => {
      const raw = fixture("plain.eml")
      const pieces = deliveryPieces(raw, context())
      const body = pieces[pieces.length - 1]!
      assert.strictEqual(body.buffer, raw.buffer)
      assert.strictEqual(body.byteOffset + body.byteLength, raw.byteLength)
    }))

  it.effect("passes a binary body through byte for byte", () =>
    Effect.sync(() => {
      const body = new Uint8Array([0x0d, 0x0a, ...Array.from({ length: 256 }, (_, i) => i), 0x0d, 0x41, 0x0a, 0xff])
      const head = bytes("From: a@example.test\r\nBcc: b@example.net\r\nContent-Transfer-Encoding: binary\r\n")
      const raw = new Uint8Array([...head, ...body])
      const delivered = deliveryRaw(raw, context())
      assert.deepStrictEqual(delivered.subarray(delivered.length - body.length), body)
      assert.notInclude(text(delivered.subarray(0, delivered.length - body.length)), "Bcc")
    }))

  it.effect.each(fixtures)("delivers bytes whose headers are the canonical headers for %s", (name) =>
    Effect.gen(function*() {
      const raw = fixture(name)
      const canonical = toCanonical(yield* parse(raw), context())
      const reparsed = yield* parse(deliveryRaw(raw, context()))
      assert.deepStrictEqual(reparsed.headers, canonical.headers)
    }))
})

describe("Transform helpers", () => {
  it("folds a long header at spaces and unfolds to the same value", () => {
    const long = context({ session: new SessionInfo({ ...context().session, helo: "a".repeat(70) + ".example.test" }) })
    const header = receivedHeader(long)
    const wire = foldHeader(header)
    assert.isTrue(wire.endsWith("\r\n"))
    for (const line of wire.slice(0, -2).split("\r\n").slice(1)) assert.isTrue(line.startsWith(" "))
    const parsed = splitHeaderSection(bytes(wire + "\r\n"))
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isSuccess(parsed)) assert.deepStrictEqual(parsed.success.fields.map(({ name, value }) => ({ name, value })), [header])
  })

  it("makes a client's HELO safe inside the Received comment", () => {
    const odd = context({ session: new SessionInfo({ ...context().session, helo: "evil (host) \\ x" }) })
    assert.strictEqual(
      receivedHeader(odd).value,
      "from evil??host????x (192.0.2.10) by mx.gateway.test with ESMTPSA id 0MCQ1X2Y3ABCDEFGHIJ; Sat, 05 Jul 2025 10:20:30 +0000"
    )
  })

  it("splits a header section and reports where the body starts", () => {
    const raw = bytes("A: 1\r\nB: two\r\n\tlines\r\n\r\nbody")
    const section = splitHeaderSection(raw)
    assert.isTrue(Result.isSuccess(section))
    if (!Result.isSuccess(section)) return
    assert.deepStrictEqual(section.success.fields.map(({ name, value }) => [name, value]), [["A", "1"], ["B", "two lines"]])
    assert.strictEqual(text(raw.subarray(section.success.bodyOffset)), "\r\nbody")
  })
})

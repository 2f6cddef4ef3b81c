/**
 * End to end: real SMTP clients (nodemailer, Python's smtplib) submit through the real gateway over
 * STARTTLS + AUTH, and the message that reaches the upstream (the outbox directory, or a real HTTP
 * server standing in for the email API) is checked field by field and attachments byte for byte.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { CanonicalMessage } from "../../src/domain/Message.ts"
import { contentBytes } from "../support/Attachments.ts"
import { runProgram, transport } from "../support/Clients.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { alice, startGateway } from "../support/TestGateway.ts"

const pdf = crypto.randomBytes(20_000)
const png = crypto.randomBytes(3_000)
const csv = "id,amount\r\n1,10.50\r\n2,20.00\r\n"
const html = `<p>Report attached.</p><img src="cid:logo@example.com">`
const text = "Report attached.\nCafé au lait, 5 €."

/** Sends the rich message with nodemailer: STARTTLS, AUTH PLAIN, To + Cc + Bcc, HTML + text, 2 attachments, 1 inline image. */
const sendWithNodemailer = (port: number) =>
  Effect.promise(() =>
    transport(port, alice).sendMail({
      from: "Alice Example <alice@example.com>",
      to: "Bob <bob@example.net>",
      cc: "carol@example.net",
      bcc: "dave@example.net",
      replyTo: "replies@example.org",
      subject: "Quarterly report — café",
      messageId: "<e2e-1@example.com>",
      inReplyTo: "<earlier@example.com>",
      references: ["<first@example.com>", "<earlier@example.com>"],
      text,
      html,
      attachments: [
        { filename: "report.pdf", content: pdf, contentType: "application/pdf" },
        { filename: "data.csv", content: csv, contentType: "text/csv" },
        { filename: "logo.png", content: png, contentType: "image/png", cid: "logo@example.com" }
      ]
    })
  )

/** The checks every upstream must pass for the nodemailer message. */
const assertRichMessage = (message: CanonicalMessage) => {
  assert.deepStrictEqual(message.principal, { username: "alice" })
  assert.deepStrictEqual(message.envelope, {
    mail_from: "alice@example.com",
    rcpt_to: ["bob@example.net", "carol@example.net", "dave@example.net"]
  })
  assert.strictEqual(message.message_id, "<e2e-1@example.com>")
  assert.deepStrictEqual(message.from, { address: "alice@example.com", name: "Alice Example" })
  assert.deepStrictEqual(message.to, [{ address: "bob@example.net", name: "Bob" }])
  assert.deepStrictEqual(message.cc, [{ address: "carol@example.net", name: null }])
  assert.deepStrictEqual(message.reply_to, [{ address: "replies@example.org", name: null }])
  assert.strictEqual(message.subject, "Quarterly report — café")
  assert.strictEqual(message.text?.trimEnd(), text)
  assert.strictEqual(message.html?.trim(), html)
  assert.strictEqual(message.in_reply_to, "<earlier@example.com>")
  assert.deepStrictEqual(message.references, ["<first@example.com>", "<earlier@example.com>"])
  assert.match(message.received_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/)
  assert.notStrictEqual(message.date, null)

  const names = message.headers.map((h) => h.name.toLowerCase())
  assert.strictEqual(names[0], "received")
  assert.isFalse(names.includes("bcc"), "Bcc never travels as a header")
  assert.isFalse(JSON.stringify(message.headers).includes("dave@example.net"))

  const byName = new Map(message.attachments.map((a) => [a.filename, a]))
  assert.strictEqual(message.attachments.length, 3)
  const report = byName.get("report.pdf")!
  assert.strictEqual(report.content_type, "application/pdf")
  assert.strictEqual(report.disposition, "attachment")
  assert.strictEqual(report.size, pdf.length)
  assert.isTrue(Buffer.from(contentBytes(report.content_base64)).equals(pdf), "the PDF arrives byte for byte")
  const data = byName.get("data.csv")!
  assert.strictEqual(data.content_type, "text/csv")
  assert.strictEqual(Buffer.from(contentBytes(data.content_base64)).toString("utf8"), csv)
  const logo = byName.get("logo.png")!
  assert.strictEqual(logo.disposition, "inline")
  assert.strictEqual(logo.content_id, "logo@example.com")
  assert.isTrue(Buffer.from(contentBytes(logo.content_base64)).equals(png), "the inline image arrives byte for byte")
}

const decodeCanonical = Schema.decodeUnknownSync(Schema.fromJsonString(CanonicalMessage))

/** Python's smtplib: STARTTLS, then AUTH LOGIN with an initial response. Prints the final reply. */
const smtplibScript = `
import smtplib, ssl, sys
from email.message import EmailMessage
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
msg = EmailMessage()
msg["From"] = "Alice <alice@example.org>"
msg["To"] = "erin@example.net"
msg["Subject"] = "From smtplib"
msg["Message-ID"] = "<smtplib-1@example.org>"
msg.set_content("Sent with Python's smtplib.")
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    s.user, s.password = user, password
    code, reply = s.auth("LOGIN", s.auth_login, initial_response_ok=True)
    print(code, reply.decode())
    s.send_message(msg)
    print("sent")
`

const runSmtplib = (port: number) => runProgram("python3", ["-c", smtplibScript, String(port), alice.username, alice.password])

const outboxMessages = (outboxDir: string) =>
  fs.readdirSync(outboxDir).filter((f) => f.endsWith(".json")).map((f) => ({
    id: f.slice(0, -5),
    message: decodeCanonical(fs.readFileSync(path.join(outboxDir, f), "utf8")),
    eml: fs.readFileSync(path.join(outboxDir, f.replace(/\.json$/, ".eml")), "utf8")
  }))

describe("Submission end to end", () => {
  describe("with the outbox upstream", () => {
    it.live("delivers nodemailer's HTML message with attachments, an inline image and Bcc to the outbox", () =>
      Effect.gen(function*() {
        const gateway = yield* startGateway()
        const info = yield* sendWithNodemailer(gateway.smtpPort)
        assert.match(info.response, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/)

        const [written, ...others] = outboxMessages(gateway.outboxDir)
        assert.strictEqual(others.length, 0)
        assert.isTrue(info.response.endsWith(written!.id), "the reply names the outbox id")
        assert.strictEqual(written!.message.id, written!.id)
        assertRichMessage(written!.message)
        assert.notMatch(written!.eml, /^bcc:/im, "no Bcc header in the .eml")
        assert.notInclude(written!.eml, "dave@example.net")
        assert.match(written!.eml, /^Received: from /, "the .eml starts with our Received header")
      }))

    it.live("delivers a message sent by Python's smtplib with AUTH LOGIN", () =>
      Effect.gen(function*() {
        const gateway = yield* startGateway()
        const output = yield* runSmtplib(gateway.smtpPort)
        assert.include(output, "235 2.7.0 Authentication successful")
        assert.include(output, "sent")

        const [written] = outboxMessages(gateway.outboxDir)
        assert.deepStrictEqual(written!.message.envelope, { mail_from: "alice@example.org", rcpt_to: ["erin@example.net"] })
        assert.deepStrictEqual(written!.message.from, { address: "alice@example.org", name: "Alice" })
        assert.strictEqual(written!.message.subject, "From smtplib")
        assert.strictEqual(written!.message.message_id, "<smtplib-1@example.org>")
        assert.strictEqual(written!.message.text, "Sent with Python's smtplib.\n")
      }))
  })

  describe("with the http upstream", () => {
    it.live("posts nodemailer's message as canonical JSON with the user's API key and an Idempotency-Key", () =>
      Effect.gen(function*() {
        const api = yield* RecordingHttpServer.make
        yield* api.respondWith(() => json(202, { id: "api-msg-1" }))
        const gateway = yield* startGateway({ UPSTREAM: "http", UPSTREAM_URL: `${api.url}/v1/messages` })
        const info = yield* sendWithNodemailer(gateway.smtpPort)
        assert.match(info.response, /^250 2\.0\.0 Ok: queued as /)

        const [request, ...more] = yield* api.requests
        assert.strictEqual(more.length, 0, "one POST for the whole message")
        assert.strictEqual(request!.method, "POST")
        assert.strictEqual(request!.path, "/v1/messages")
        assert.strictEqual(request!.headers["authorization"], `Bearer ${alice.apiKey}`)
        assert.strictEqual(request!.headers["content-type"], "application/json")
        assert.match(String(request!.headers["idempotency-key"]), /^[0-9a-f]{64}$/)
        assert.match(String(request!.headers["traceparent"]), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
        assertRichMessage(decodeCanonical(request!.body))
      }))

    it.live("posts a message sent by Python's smtplib with AUTH LOGIN", () =>
      Effect.gen(function*() {
        const api = yield* RecordingHttpServer.make
        yield* api.respondWith(() => json(200, { id: "api-msg-2" }))
        const gateway = yield* startGateway({ UPSTREAM: "http", UPSTREAM_URL: api.url })
        const output = yield* runSmtplib(gateway.smtpPort)
        assert.include(output, "sent")
        const [request] = yield* api.requests
        const message = decodeCanonical(request!.body)
        assert.deepStrictEqual(message.envelope.rcpt_to, ["erin@example.net"])
        assert.strictEqual(message.subject, "From smtplib")
      }))

    it.live("answers 451 and writes nothing when the API fails temporarily, and 554 when it refuses", () =>
      Effect.gen(function*() {
        const api = yield* RecordingHttpServer.make
        const gateway = yield* startGateway({ UPSTREAM: "http", UPSTREAM_URL: api.url, RETRY_MAX_ATTEMPTS: "1" })
        yield* api.respondWith(() => json(503, { error: "maintenance" }))
        const temporary = yield* Effect.flip(sendWithNodemailer(gateway.smtpPort).pipe(Effect.orDie, Effect.sandbox))
        assert.include(String(temporary), "451")
        yield* api.respondWith(() => json(422, { detail: "recipient domain is blocked" }))
        const permanent = yield* Effect.flip(sendWithNodemailer(gateway.smtpPort).pipe(Effect.orDie, Effect.sandbox))
        assert.include(String(permanent), "554 5.6.0 Message rejected by the email API: recipient domain is blocked")
      }))
  })
})

/**
 * End to end in Cakemail mode (issue 3, Acceptance): real clients (nodemailer, Python's smtplib) submit
 * through the real gateway with AUTH_BACKEND=cakemail UPSTREAM=cakemail against FakeCakemail on
 * loopback; the checks read what the stand-in received (token grants, sender lookups, one
 * `POST /v2/emails` per recipient) and the replies the clients got.
 */
import * as crypto from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import nodemailer from "nodemailer"
import { clientsAs, closedPort, type MailOptions, replyOf, transportOptions } from "../support/Clients.ts"
import { type FakeCakemailHandle, type FakeCakemailOptions, FakeCakemail, Faults } from "../support/FakeCakemail.ts"
import { quickEnv, startGateway } from "../support/TestGateway.ts"

/** FakeCakemail's first default account (id 1001): confirmed alice@ (1001-1) and news@ (1001-2), unconfirmed pending@. */
const alice = { username: "alice@example.test", password: "alice-secret" } as const

/** Cakemail mode against the stand-in at `apiUrl`, with quick budgets. */
const cakemailEnv = (apiUrl: string): Record<string, string> => ({
  AUTH_BACKEND: "cakemail",
  UPSTREAM: "cakemail",
  CAKEMAIL_API_URL: apiUrl,
  ...quickEnv
})

/** A FakeCakemail and a gateway pointed at it, for the current scope. */
const cakemailGateway = (options: { readonly fake?: FakeCakemailOptions; readonly env?: Record<string, string> } = {}) =>
  Effect.gen(function*() {
    const fake = yield* FakeCakemail.make(options.fake)
    const gateway = yield* startGateway({ ...cakemailEnv(fake.url), ...options.env })
    return { fake, port: gateway.smtpPort }
  })

const { nodemailerSend, nodemailerLogin, smtplib } = clientsAs(alice)

const plainMail = (overrides: Partial<MailOptions> = {}): MailOptions => ({
  from: "Alice Example <alice@example.test>",
  to: "bob@example.net",
  subject: "Hello",
  text: "Hello Bob.",
  ...overrides
})

// ---- what the stand-in received --------------------------------------------------------------------

const PostedEmail = Schema.Struct({
  email: Schema.String,
  sender: Schema.Struct({ id: Schema.String, name: Schema.optionalKey(Schema.String) }),
  content: Schema.Struct({
    subject: Schema.String,
    html: Schema.optionalKey(Schema.String),
    text: Schema.optionalKey(Schema.String),
    encoding: Schema.String,
    type: Schema.String
  }),
  list_id: Schema.optionalKey(Schema.Number),
  tags: Schema.optionalKey(Schema.Array(Schema.String)),
  tracking: Schema.optionalKey(Schema.Record(Schema.String, Schema.Boolean)),
  additional_headers: Schema.optionalKey(Schema.Array(Schema.Struct({ name: Schema.String, value: Schema.String }))),
  attachment: Schema.optionalKey(
    Schema.Array(Schema.Struct({ filename: Schema.String, type: Schema.String, content: Schema.String }))
  )
})
const decodePosted = Schema.decodeUnknownSync(PostedEmail)

const postedEmails = (fake: FakeCakemailHandle) =>
  Effect.map(fake.requestsTo("emails"), (requests) =>
    requests.map((r) => ({ authorization: r.headers["authorization"], idempotencyKey: r.headers["idempotency-key"], body: decodePosted(r.body) })))

const decodeForm = Schema.decodeUnknownSync(Schema.Record(Schema.String, Schema.String))
const tokenForms = (fake: FakeCakemailHandle) =>
  Effect.map(fake.requestsTo("token"), (requests) => requests.map((r) => decodeForm(r.body)))

const headerValue = (headers: ReadonlyArray<{ readonly name: string; readonly value: string }> | undefined, name: string) =>
  headers?.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value

const pdf = crypto.randomBytes(12_000)
const jpeg = crypto.randomBytes(2_000)
const csv = "id,amount\r\n1,10.50\r\n"

describe("Cakemail mode end to end", () => {
  it.live("posts one email per recipient (To, Cc and Bcc) from nodemailer, fields mapped, with the login's token", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const reply = yield* nodemailerSend(port, {
        from: "Alice Example <alice@example.test>",
        to: "Bob <bob@example.net>",
        cc: "carol@example.net",
        bcc: "dave@example.net",
        replyTo: "replies@example.test",
        subject: "Quarterly report — café",
        messageId: "<cakemail-e2e-1@example.test>",
        inReplyTo: "<earlier@example.test>",
        references: ["<first@example.test>", "<earlier@example.test>"],
        text: "Report attached.\nCafé au lait, 5 €.",
        html: "<p>Report attached. Café au lait, 5 €.</p>",
        headers: {
          "X-Tags": "billing, q3",
          "X-List-Id": "42",
          "X-Track-Opens": "true",
          "X-Campaign": "q3-report"
        },
        attachments: [
          { filename: "report.pdf", content: pdf, contentType: "application/pdf" },
          { filename: "Data export 2024.csv", content: csv, contentType: "text/csv" },
          { filename: "photo.jpg", content: jpeg, contentType: "image/jpeg" }
        ]
      })
      assert.match(reply, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/)

      const tokens = yield* tokenForms(fake)
      assert.strictEqual(tokens.length, 1, "one token for the session")
      assert.deepStrictEqual(tokens[0], { grant_type: "password", username: alice.username, password: alice.password })
      const [issued] = yield* fake.issued
      assert.strictEqual((yield* fake.requestsTo("senders")).length, 1, "the senders are fetched once")

      const emails = yield* postedEmails(fake)
      assert.deepStrictEqual(emails.map((e) => e.body.email).sort(), ["bob@example.net", "carol@example.net", "dave@example.net"])
      assert.strictEqual(new Set(emails.map((e) => e.idempotencyKey)).size, 3, "one idempotency key per recipient")
      for (const { authorization, body } of emails) {
        assert.strictEqual(authorization, `Bearer ${issued!.accessToken}`)
        assert.deepStrictEqual(body.sender, { id: "1001-1", name: "Alice Example" })
        assert.strictEqual(body.content.subject, "Quarterly report — café")
        assert.strictEqual(body.content.text?.trimEnd(), "Report attached.\nCafé au lait, 5 €.")
        assert.strictEqual(body.content.html?.trim(), "<p>Report attached. Café au lait, 5 €.</p>")
        assert.strictEqual(body.content.encoding, "utf-8")
        assert.strictEqual(body.content.type, "transactional")
        assert.strictEqual(body.list_id, 42)
        assert.deepStrictEqual(body.tags, ["billing", "q3"])
        assert.deepStrictEqual(body.tracking, { opens: true, clicks_html: false, clicks_text: false })

        const headers = body.additional_headers
        assert.strictEqual(headerValue(headers, "Cc"), "carol@example.net")
        assert.strictEqual(headerValue(headers, "Reply-To"), "replies@example.test")
        assert.strictEqual(headerValue(headers, "In-Reply-To"), "<earlier@example.test>")
        assert.strictEqual(headerValue(headers, "References"), "<first@example.test> <earlier@example.test>")
        assert.strictEqual(headerValue(headers, "X-Campaign"), "q3-report")
        const names = (headers ?? []).map((h) => h.name.toLowerCase())
        for (const relay of ["x-tags", "x-list-id", "x-track-opens", "bcc", "from", "to", "subject", "received"]) {
          assert.notInclude(names, relay, `${relay} is not forwarded as a header`)
        }
        assert.notInclude(JSON.stringify(headers), "dave@example.net", "Bcc stays out of every header")

        assert.deepStrictEqual(body.attachment?.map((a) => [a.filename, a.type]), [
          ["report.pdf", "pdf"],
          ["Data-export-2024.csv", "csv"],
          ["photo.jpeg", "jpeg"]
        ])
        assert.isTrue(Buffer.from(body.attachment![0]!.content, "base64").equals(pdf), "the PDF arrives byte for byte")
        assert.strictEqual(Buffer.from(body.attachment![1]!.content, "base64").toString("utf8"), csv)
        assert.isTrue(Buffer.from(body.attachment![2]!.content, "base64").equals(jpeg))
      }
    }))

  it.live("posts a message from Python's smtplib (AUTH LOGIN), its relay headers choosing type and sender", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const replies = yield* smtplib({
        port,
        mechanism: "LOGIN",
        mail_from: "alice@example.test",
        rcpt_to: ["erin@example.net", "frank@example.net"],
        headers: [
          ["From", "Alice <ALICE@example.test>"],
          ["To", "erin@example.net, frank@example.net"],
          ["Subject", "From smtplib"],
          ["X-Email-Api-Type", "marketing"],
          ["X-Sender-Id", "1001-2"]
        ],
        text: "Sent with Python's smtplib."
      })
      assert.strictEqual(replies.auth, "235 2.7.0 Authentication successful")
      assert.match(replies.data ?? "", /^250 2\.0\.0 Ok: queued as /)

      const emails = yield* postedEmails(fake)
      assert.deepStrictEqual(emails.map((e) => e.body.email).sort(), ["erin@example.net", "frank@example.net"])
      const [issued] = yield* fake.issued
      for (const { authorization, body } of emails) {
        assert.strictEqual(authorization, `Bearer ${issued!.accessToken}`)
        assert.deepStrictEqual(body.sender, { id: "1001-2", name: "Alice" }, "x-sender-id chooses the sender")
        assert.deepStrictEqual(body.content, {
          subject: "From smtplib",
          text: "Sent with Python's smtplib.\n",
          encoding: "utf-8",
          type: "marketing"
        })
        assert.isUndefined(body.tracking, "marketing mail keeps the API's tracking defaults")
        const names = (body.additional_headers ?? []).map((h) => h.name.toLowerCase())
        assert.notInclude(names, "x-email-api-type")
        assert.notInclude(names, "x-sender-id")
      }
    }))

  it.live("exchanges one credential for one token across 100 concurrent and then 100 sequential sessions", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const concurrent = yield* Effect.forEach(Array.from({ length: 100 }), () => nodemailerLogin(port), {
        concurrency: "unbounded"
      })
      assert.isTrue(concurrent.every((ok) => ok === true))
      assert.strictEqual((yield* fake.requestsTo("token")).length, 1, "the concurrent logins share one POST /token")

      const sequential = yield* Effect.forEach(Array.from({ length: 100 }), () => nodemailerLogin(port))
      assert.isTrue(sequential.every((ok) => ok === true))
      assert.strictEqual((yield* fake.requestsTo("token")).length, 1, "later logins are answered from the cache")

      assert.match(yield* nodemailerSend(port, plainMail()), /^250 /)
      assert.strictEqual((yield* fake.requestsTo("token")).length, 1)
    }))

  it.live("renews an expired token with the refresh grant, not the password", () =>
    Effect.gen(function*() {
      // A 2-second token: the gateway never keeps it cached until the next session.
      const { fake, port } = yield* cakemailGateway({ fake: { tokenLifetimeSeconds: 2 } })
      assert.match(yield* nodemailerSend(port, plainMail({ subject: "first" })), /^250 /)
      yield* fake.expireAccessTokens
      assert.match(yield* nodemailerSend(port, plainMail({ subject: "second" })), /^250 /)

      const [first, second, ...more] = yield* fake.issued
      assert.strictEqual(more.length, 0)
      assert.strictEqual(first!.grant, "password")
      assert.strictEqual(second!.grant, "refresh_token")
      const forms = yield* tokenForms(fake)
      assert.deepStrictEqual(forms[1], { grant_type: "refresh_token", refresh_token: first!.refreshToken })

      const emails = yield* postedEmails(fake)
      assert.deepStrictEqual(
        emails.map((e) => [e.body.content.subject, e.authorization]),
        [["first", `Bearer ${first!.accessToken}`], ["second", `Bearer ${second!.accessToken}`]]
      )
    }))

  it.live("answers a wrong password with 535, and a second time from the cache without asking the API", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const first = yield* smtplib({ port, password: "wrong-password" })
      assert.strictEqual(first.auth, "535 5.7.8 Authentication credentials invalid")
      const second = yield* nodemailerSend(port, plainMail(), "wrong-password")
      assert.strictEqual(second, "535 5.7.8 Authentication credentials invalid")
      assert.strictEqual((yield* fake.requestsTo("token")).length, 1, "the refusal is cached")

      const right = yield* smtplib({ port })
      assert.strictEqual(right.auth, "235 2.7.0 Authentication successful")
      assert.strictEqual((yield* fake.requestsTo("token")).length, 2)
    }))

  it.live("refuses an account with multi-factor authentication with 535 and says why", () =>
    Effect.gen(function*() {
      const { port } = yield* cakemailGateway()
      const replies = yield* smtplib({ port, user: "mfa@example.test", password: "mfa-secret" })
      assert.match(replies.auth, /^535 5\.7\.8 Authentication credentials invalid: .*multi-factor.*API-only credential/)
    }))

  it.live("answers 454 4.7.0 while the auth API fails, and does not cache the failure", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      yield* fake.fault("token", Faults.serverError())
      const down = yield* smtplib({ port })
      assert.strictEqual(down.auth, "454 4.7.0 Temporary authentication failure, try again later")
      assert.strictEqual((yield* fake.requestsTo("token")).length, 3, "one call and two retries")

      yield* fake.clearFaults
      assert.match(yield* nodemailerSend(port, plainMail()), /^250 /)
    }))

  it.live("answers 454 4.7.0 when the auth API cannot be reached", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway(cakemailEnv(`http://127.0.0.1:${yield* closedPort}`))
      const replies = yield* smtplib({ port: gateway.smtpPort })
      assert.strictEqual(replies.auth, "454 4.7.0 Temporary authentication failure, try again later")
    }))

  it.live("refuses an unconfirmed or unknown sender with 550 5.7.1 at MAIL, and a From header the same after DATA", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const pending = yield* smtplib({ port, mail_from: "pending@example.test", rcpt_to: ["bob@example.net"] })
      assert.strictEqual(pending.mail, "550 5.7.1 Sender address not allowed for this account")
      const unknown = yield* smtplib({ port, mail_from: "stranger@example.test", rcpt_to: ["bob@example.net"] })
      assert.strictEqual(unknown.mail, "550 5.7.1 Sender address not allowed for this account")
      const header = yield* nodemailerSend(port, {
        ...plainMail({ from: "Pending <pending@example.test>" }),
        envelope: { from: "alice@example.test", to: "bob@example.net" }
      })
      assert.strictEqual(header, "550 5.7.1 Sender address not allowed for this account")
      assert.strictEqual((yield* fake.requestsTo("emails")).length, 0)
    }))

  it.live("refuses an attachment the API cannot carry, or an inline image, with 554 5.6.0 naming it", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const zip = yield* nodemailerSend(port, plainMail({
        attachments: [
          { filename: "report.pdf", content: pdf, contentType: "application/pdf" },
          { filename: "archive.zip", content: crypto.randomBytes(500), contentType: "application/zip" }
        ]
      }))
      assert.match(zip, /^554 5\.6\.0 Message rejected by the email API: attachment "archive\.zip" \(application\/zip\)/)
      const inline = yield* nodemailerSend(port, plainMail({
        html: `<p>Logo: <img src="cid:logo@example.test"></p>`,
        attachments: [{ filename: "logo.png", content: jpeg, contentType: "image/png", cid: "logo@example.test" }]
      }))
      assert.match(inline, /^554 5\.6\.0 Message rejected by the email API: inline image "logo\.png"/)
      assert.strictEqual((yield* fake.requestsTo("emails")).length, 0, "nothing is sent")
    }))

  it.live("drops the parts the API cannot carry when CAKEMAIL_UNSUPPORTED_PARTS=drop", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway({ env: { CAKEMAIL_UNSUPPORTED_PARTS: "drop" } })
      const reply = yield* nodemailerSend(port, plainMail({
        html: `<p>Logo: <img src="cid:logo@example.test"></p>`,
        attachments: [
          { filename: "report.pdf", content: pdf, contentType: "application/pdf" },
          { filename: "archive.zip", content: crypto.randomBytes(500), contentType: "application/zip" },
          { filename: "logo.png", content: jpeg, contentType: "image/png", cid: "logo@example.test" }
        ]
      }))
      assert.match(reply, /^250 /)
      const [email] = yield* postedEmails(fake)
      assert.deepStrictEqual(email!.body.attachment?.map((a) => a.filename), ["report.pdf"])
    }))

  it.live("answers 554 when the API answers 201 with status rejected, and names the API's reason for a 422", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      yield* fake.fault("emails", Faults.rejected("rejected"), 1)
      const rejected = yield* nodemailerSend(port, plainMail())
      assert.match(rejected, /^554 5\.6\.0 Message rejected by the email API: .*status rejected/)

      yield* fake.fault("emails", Faults.validation("recipient is on the suppression list", ["body", "email"]), 1)
      const invalid = yield* nodemailerSend(port, plainMail())
      assert.strictEqual(invalid, "554 5.6.0 Message rejected by the email API: email: recipient is on the suppression list")
      assert.strictEqual((yield* fake.requestsTo("emails")).length, 2, "permanent refusals are not retried")
    }))

  it.live("gets one new token when the API refuses the session's token mid-session, and delivers", () =>
    Effect.gen(function*() {
      const { fake, port } = yield* cakemailGateway()
      const transport = yield* Effect.acquireRelease(
        Effect.sync(() => nodemailer.createTransport({ ...transportOptions(port, alice, "client.test"), pool: true, maxConnections: 1 })),
        (t) => Effect.sync(() => t.close())
      )
      assert.match(yield* replyOf(() => transport.sendMail(plainMail({ subject: "before" }))), /^250 /)
      yield* fake.expireAccessTokens
      assert.match(yield* replyOf(() => transport.sendMail(plainMail({ subject: "after" }))), /^250 /)

      const issued = yield* fake.issued
      assert.strictEqual(issued.length, 2, "exactly one new token")
      const emails = yield* postedEmails(fake)
      assert.deepStrictEqual(
        emails.map((e) => [e.body.content.subject, e.authorization]),
        [
          ["before", `Bearer ${issued[0]!.accessToken}`],
          ["after", `Bearer ${issued[0]!.accessToken}`],
          ["after", `Bearer ${issued[1]!.accessToken}`]
        ]
      )
    }))
})

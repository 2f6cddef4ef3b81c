import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric, Option, Redacted, Result } from "effect"
import { attachmentNamePattern, mapAttachments, sanitizeAttachmentName } from "../../src/delivery/CakemailUpstream.ts"
import { maxResponseBytes } from "../../src/delivery/HttpReply.ts"
import { UpstreamError } from "../../src/delivery/Upstream.ts"
import { apiErrors, apiLatency } from "../../src/observability/Metrics.ts"
import type { CanonicalMessage } from "../../src/domain/Message.ts"
import { Faults } from "../support/FakeCakemail.ts"
import { login, message, submit, withCakemail } from "./harness.ts"

type Attachment = CanonicalMessage["attachments"][number]

const attachment = (filename: string | null, content_type: string, extra: Partial<Attachment> = {}): Attachment => ({
  filename,
  content_type,
  size: 3,
  content_id: null,
  disposition: "attachment",
  content_base64: new Uint8Array([1, 2, 3]),
  ...extra
})

const withHeaders = (...headers: Array<[string, string]>) =>
  message({ headers: [...message().headers, ...headers.map(([name, value]) => ({ name, value }))] })

/** The body of the one `POST /v2/emails` the fake received. */
const postedEmail = Effect.fnUntraced(function*(fake: { requestsTo: (e: "emails") => Effect.Effect<ReadonlyArray<{ body: unknown }>> }) {
  const posts = yield* fake.requestsTo("emails")
  assert.strictEqual(posts.length, 1)
  return posts[0]?.body as Record<string, unknown>
})

describe("CakemailUpstream", () => {
  describe("mapping", () => {
    it.live("posts one email for the recipient with the subject, UTF-8 text, sender and bearer token", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          const accepted = yield* submit(principal)
          const [post] = yield* fake.requestsTo("emails")
          assert.strictEqual(post?.headers.authorization, `Bearer ${Redacted.value(Option.getOrThrow(principal.apiKey))}`)
          assert.strictEqual(post?.headers["idempotency-key"], "gw-1:bob@example.net")
          assert.deepStrictEqual(post?.body, {
            email: "bob@example.net",
            sender: { id: "1001-1", name: "Alice Example" },
            content: { subject: "Hello", text: "Hi Bob, café ☕", encoding: "utf-8", type: "transactional" },
            tracking: { opens: false, clicks_html: false, clicks_text: false }
          })
          assert.match(accepted.upstreamId, /^[0-9a-f-]{36}$/)
        })
      ))

    it.live("sends html and text together, and leaves out an empty sender name", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, message({ html: "<p>Hi</p>", from: { address: "alice@example.test", name: null } }))
          const body = yield* postedEmail(fake)
          assert.deepStrictEqual(body.sender, { id: "1001-1" })
          assert.deepStrictEqual(body.content, {
            subject: "Hello",
            html: "<p>Hi</p>",
            text: "Hi Bob, café ☕",
            encoding: "utf-8",
            type: "transactional"
          })
        })
      ))

    it.live("maps the relay headers to type, list, tags and tracking, and does not forward them", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, withHeaders(
            ["X-Email-Api-Type", "Marketing"],
            ["X-List-Id", "42"],
            ["X-Tags", "welcome, onboarding,welcome,"],
            ["X-Track-Opens", "yes"],
            ["X-Track-Clicks", "false"]
          ))
          const body = yield* postedEmail(fake)
          assert.strictEqual((body.content as Record<string, unknown>).type, "marketing")
          assert.strictEqual(body.list_id, 42)
          assert.deepStrictEqual(body.tags, ["welcome", "onboarding"])
          assert.deepStrictEqual(body.tracking, { opens: true, clicks_html: false, clicks_text: false })
          assert.isUndefined(body.additional_headers)
        })
      ))

    it.live("leaves tracking to the API for marketing mail without tracking headers", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal)
          const body = yield* postedEmail(fake)
          assert.strictEqual((body.content as Record<string, unknown>).type, "marketing")
          assert.isUndefined(body.tracking)
        }), { upstream: { emailType: "marketing" } }))

    it.live("forwards Cc, Reply-To, In-Reply-To, References and custom headers, and not transport headers", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, withHeaders(
            ["Received", "from client by gateway"],
            ["Cc", "Carol <carol@example.net>"],
            ["Reply-To", "=?UTF-8?Q?S=C3=A9bastien?= <seb@example.net>"],
            ["In-Reply-To", "<m0@example.test>"],
            ["References", "<m-1@example.test> <m0@example.test>"],
            ["DKIM-Signature", "v=1; a=rsa-sha256; d=example.test"],
            ["X-Campaign", "spring"],
            ["List-Unsubscribe", "<mailto:unsub@example.test>"],
            ["X-Sender-Id", "1001-1"]
          ))
          const body = yield* postedEmail(fake)
          assert.deepStrictEqual(body.additional_headers, [
            { name: "Cc", value: "Carol <carol@example.net>" },
            { name: "Reply-To", value: "=?UTF-8?Q?S=C3=A9bastien?= <seb@example.net>" },
            { name: "In-Reply-To", value: "<m0@example.test>" },
            { name: "References", value: "<m-1@example.test> <m0@example.test>" },
            { name: "X-Campaign", value: "spring" },
            { name: "List-Unsubscribe", value: "<mailto:unsub@example.test>" }
          ])
        })
      ))

    it.live("lets an x-sender-id header choose one of the account's confirmed senders", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, withHeaders(["X-Sender-Id", "1001-2"]))
          const body = yield* postedEmail(fake)
          assert.deepStrictEqual(body.sender, { id: "1001-2", name: "Alice Example" })
        })
      ))

    it.live("refuses an x-sender-id that is not a confirmed sender of the account, without posting", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          const error = yield* submit(principal, withHeaders(["X-Sender-Id", "1001-3"])).pipe(Effect.flip)
          assert.strictEqual(error.kind, "Rejected")
          assert.include(error.detail, "x-sender-id 1001-3")
          assert.strictEqual((yield* fake.requestsTo("emails")).length, 0)
        })
      ))

    it.live("refuses a From address that is not a confirmed sender, without posting", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          const error = yield* submit(principal, message({ from: { address: "pending@example.test", name: null } })).pipe(
            Effect.flip
          )
          assert.strictEqual(error.kind, "Rejected")
          assert.strictEqual((yield* fake.requestsTo("emails")).length, 0)
        })
      ))

    it.live("refuses a message without a subject before any API call", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.clearRequests
          for (const subject of [null, "", "   "]) {
            const error = yield* submit(principal, message({ subject })).pipe(Effect.flip)
            assert.strictEqual(error.kind, "Rejected")
            assert.strictEqual(error.detail, "the email API requires a subject")
          }
          assert.strictEqual((yield* fake.requests).length, 0)
        })
      ))

    it.live("refuses malformed relay headers by name", () =>
      withCakemail(() =>
        Effect.gen(function*() {
          const principal = yield* login()
          const cases: Array<[string, string, string]> = [
            ["X-Email-Api-Type", "bulk", "x-email-api-type must be transactional or marketing"],
            ["X-List-Id", "list-7", "x-list-id must be a number"],
            ["X-Track-Opens", "maybe", "x-track-opens must be true or false"]
          ]
          for (const [name, value, detail] of cases) {
            const error = yield* submit(principal, withHeaders([name, value])).pipe(Effect.flip)
            assert.deepStrictEqual([error.kind, error.detail], ["Rejected", detail])
          }
        })
      ))

    it.live("sends attachments under names and types the API accepts", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, message({
            attachments: [
              attachment("My Report (final).PDF", "application/pdf"),
              attachment("photo.jpg", "image/jpeg"),
              attachment("C:\\Users\\me\\résumé.docx", "application/octet-stream"),
              attachment("invite.ics", "text/calendar; method=REQUEST"),
              attachment(null, "image/png"),
              attachment("data.csv", "text/csv")
            ]
          }))
          const body = yield* postedEmail(fake)
          assert.deepStrictEqual(body.attachment, [
            { filename: "My-Report-final.pdf", type: "pdf", content: "AQID" },
            { filename: "photo.jpeg", type: "jpeg", content: "AQID" },
            { filename: "resume.docx", type: "docx", content: "AQID" },
            { filename: "invite.ics", type: "calendar", content: "AQID" },
            { filename: "attachment-5.png", type: "png", content: "AQID" },
            { filename: "data.csv", type: "csv", content: "AQID" }
          ])
        })
      ))

    it.live("refuses an attachment of a type the API cannot carry, naming it, without posting", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          const error = yield* submit(principal, message({
            attachments: [attachment("report.pdf", "application/pdf"), attachment("notes.txt", "text/plain")]
          })).pipe(Effect.flip)
          assert.strictEqual(error.kind, "Rejected")
          assert.include(error.detail, `attachment "notes.txt" (text/plain)`)
          assert.strictEqual((yield* fake.requestsTo("emails")).length, 0)
        })
      ))

    it.live("refuses an inline cid: image, naming it", () =>
      withCakemail(() =>
        Effect.gen(function*() {
          const principal = yield* login()
          const error = yield* submit(principal, message({
            html: `<img src="cid:logo@x">`,
            attachments: [attachment("logo.png", "image/png", { disposition: "inline", content_id: "<logo@x>" })]
          })).pipe(Effect.flip)
          assert.strictEqual(error.kind, "Rejected")
          assert.strictEqual(error.detail, `inline image "logo.png" (image/png) cannot be carried by the email API`)
        })
      ))

    it.live("drops unsupported parts instead when configured to", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* submit(principal, message({
            attachments: [
              attachment("notes.txt", "text/plain"),
              attachment("logo.png", "image/png", { disposition: "inline", content_id: "<logo@x>" }),
              attachment("report.pdf", "application/pdf")
            ]
          }))
          const body = yield* postedEmail(fake)
          assert.deepStrictEqual(body.attachment, [{ filename: "report.pdf", type: "pdf", content: "AQID" }])
        }), { upstream: { dropUnsupportedParts: true } }))

    it("sanitises every file name into the API's pattern", () => {
      const names = ["a b.pdf", "..pdf", "über straße.png", "x/y/z.jpeg", "日本語.csv", "a--b__c.xls", "noext"]
      for (const [i, name] of names.entries()) {
        const sanitized = sanitizeAttachmentName(name, "pdf", i)
        assert.match(sanitized, attachmentNamePattern, name)
      }
      assert.strictEqual(sanitizeAttachmentName("über straße.png", "png", 0), "uber-stra-e.png")
      assert.strictEqual(sanitizeAttachmentName("日本語.csv", "csv", 4), "attachment-5.csv")
    })

    it("decides the type from the content type, or from the extension when the content type is generic", () => {
      const ok = mapAttachments([attachment("x.xlsx", "application/octet-stream"), attachment("y", "application/vnd.ms-excel")], false)
      assert.deepStrictEqual(Result.map(ok, (as) => as.map((a) => [a.filename, a.type])), Result.succeed([["x.xlsx", "xlsx"], ["y.xls", "xls"]]))
      assert.isTrue(Result.isFailure(mapAttachments([attachment("x.pdf", "text/plain")], false)))
      assert.isTrue(Result.isFailure(mapAttachments([attachment("x.exe", "application/octet-stream")], false)))
    })
  })

  describe("outcomes", () => {
    it.live("treats a 201 whose status is rejected or error as a permanent refusal", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          for (const status of ["rejected", "error"] as const) {
            yield* fake.clearFaults
            yield* fake.fault("emails", Faults.rejected(status))
            const error = yield* submit(principal).pipe(Effect.flip)
            assert.strictEqual(error.kind, "Rejected")
            assert.include(error.detail, `status ${status}`)
          }
        })
      ))

    it.live("times every email call and counts failed ones by type, but not a refusal made before any call", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.validation("no"), 1)
          yield* fake.fault("emails", Faults.serverError(), 1)
          for (let i = 0; i < 2; i++) yield* submit(principal).pipe(Effect.flip)
          yield* submit(principal)
          yield* submit(principal, message({ subject: null })).pipe(Effect.flip)
          const count = (type: string) => Effect.map(Metric.value(Metric.withAttributes(apiErrors, { type })), (v) => v.count)
          assert.deepStrictEqual([yield* count("rejected"), yield* count("temporary")], [1, 1])
          assert.strictEqual((yield* Metric.value(apiLatency)).count, 3)
          assert.strictEqual(new UpstreamError({ kind: "Temporary", detail: "HTTP 500" }).message, "HTTP 500", "logs show the detail")
        }).pipe(Effect.provideService(Metric.MetricRegistry, new Map()))
      ))

    it.live("turns a 422 detail body into a short reason", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.validation("value is not a valid email address", ["body", "email"]))
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.detail, error.status], ["Rejected", "email: value is not a valid email address", 422])
        })
      ))

    it.live("turns a 400 with a text detail into its reason, made printable", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.status(400, { detail: "Bad\r\nrequest\u0000 here" }))
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.detail], ["Rejected", "Bad request here"])
        })
      ))

    it.live("reports a 401 as Unauthorized; a new token from the same login then succeeds", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.expireAccessTokens
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.status], ["Unauthorized", 401])
          // what Submission.onUnauthorized does: drop the principal, log in again, deliver once more
          const renewed = yield* login()
          const accepted = yield* submit(renewed)
          assert.isString(accepted.upstreamId)
          const grants = (yield* fake.requestsTo("token")).map((r) => (r.body as Record<string, string>).grant_type)
          assert.deepStrictEqual(grants, ["password", "refresh_token"])
        })
      ))

    it.live("reports a 401 of the email endpoint as Unauthorized", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.unauthorized(), 1)
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.status], ["Unauthorized", 401])
          assert.strictEqual((yield* fake.requestsTo("emails")).length, 1)
        })
      ))

    it.live("reports a 403 as Unauthorized with its status", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.status(403, { detail: "account suspended" }))
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.status], ["Unauthorized", 403])
        })
      ))

    it.live("reports a 429 as Temporary with the Retry-After in milliseconds", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.tooManyRequests(7))
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.status, error.retryAfterMillis], ["Temporary", 429, 7000])
          assert.isTrue(error.isTemporary)
        })
      ))

    it.live("keeps a Retry-After only on a temporary failure, and reads an answer only up to its cap", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.status(400, { detail: "bad sender" }, { "retry-after": "7" }), 1)
          const refused = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([refused.kind, refused.detail, refused.retryAfterMillis], ["Rejected", "bad sender", undefined])
          yield* fake.fault("emails", Faults.status(400, { detail: "y".repeat(2 * maxResponseBytes) }), 1)
          const large = yield* submit(principal).pipe(Effect.flip)
          // the JSON is cut at the cap, so no reason can be read from it
          assert.deepStrictEqual([large.kind, large.detail], ["Rejected", "status 400"])
        })
      ))

    it.live("reports a 500 and a dropped connection as Temporary", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.serverError(), 1)
          const server = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([server.kind, server.status], ["Temporary", 500])
          yield* fake.fault("emails", Faults.drop(), 1)
          const dropped = yield* submit(principal).pipe(Effect.flip)
          assert.strictEqual(dropped.kind, "Temporary")
          assert.isUndefined(dropped.status)
        })
      ))

    it.live("reports a reply slower than the attempt timeout as Timeout", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.slow(1_000), 1)
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.strictEqual(error.kind, "Timeout")
        }), { submitTimeout: "200 millis" }))

    it.live("reports a 413 as TooLarge", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("emails", Faults.status(413, { detail: "Request Entity Too Large" }))
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.deepStrictEqual([error.kind, error.status], ["TooLarge", 413])
        })
      ))

    it.live("reports senders that cannot be fetched as Temporary", () =>
      withCakemail((fake) =>
        Effect.gen(function*() {
          const principal = yield* login()
          yield* fake.fault("senders", Faults.serverError())
          const error = yield* submit(principal).pipe(Effect.flip)
          assert.strictEqual(error.kind, "Temporary")
          assert.strictEqual((yield* fake.requestsTo("emails")).length, 0)
        })
      ))
  })
})

import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { FakeCakemail, type FakeCakemailHandle } from "../support/FakeCakemail.ts"

/** The fake must refuse what the real API refuses, or the upstream's tests prove nothing. */
const call = (fake: FakeCakemailHandle, path: string, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const response = await fetch(`${fake.url}${path}`, init)
    return { status: response.status, body: (await response.json()) as Record<string, unknown> }
  })

const token = (fake: FakeCakemailHandle, form: Record<string, string>) =>
  call(fake, "/token", { method: "POST", body: new URLSearchParams(form) })

const aliceToken = (fake: FakeCakemailHandle) =>
  Effect.map(
    token(fake, { grant_type: "password", username: "alice@example.test", password: "alice-secret" }),
    (r) => String(r.body.access_token)
  )

const postEmail = (fake: FakeCakemailHandle, bearer: string, body: unknown) =>
  call(fake, "/v2/emails", {
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })

const valid = {
  email: "bob@example.net",
  sender: { id: "1001-1" },
  content: { subject: "Hi", text: "Hello", encoding: "utf-8", type: "transactional" }
}

const locs = (body: Record<string, unknown>) =>
  (body.detail as Array<{ loc: Array<string | number> }>).map((d) => d.loc.join("."))

describe("FakeCakemail", () => {
  it.live("accepts a valid email with 201 and a queued status", () =>
    Effect.gen(function*() {
      const fake = yield* FakeCakemail.make()
      const answer = yield* postEmail(fake, yield* aliceToken(fake), valid)
      assert.strictEqual(answer.status, 201)
      assert.strictEqual((answer.body.data as Record<string, unknown>).status, "queued")
      assert.strictEqual(answer.body.email, "bob@example.net")
    }))

  it.live("refuses an email without a valid bearer token", () =>
    Effect.gen(function*() {
      const fake = yield* FakeCakemail.make()
      assert.strictEqual((yield* postEmail(fake, "at-forged", valid)).status, 401)
      const bearer = yield* aliceToken(fake)
      yield* fake.expireAccessTokens
      assert.strictEqual((yield* postEmail(fake, bearer, valid)).status, 401)
    }))

  it.live("refuses missing fields, unconfirmed or foreign senders and bad attachments with 422 details", () =>
    Effect.gen(function*() {
      const fake = yield* FakeCakemail.make()
      const bearer = yield* aliceToken(fake)
      const noSubject = yield* postEmail(fake, bearer, { ...valid, content: { text: "x" } })
      assert.deepStrictEqual([noSubject.status, locs(noSubject.body)], [422, ["body.content.subject"]])
      for (const id of ["1001-3", "1002-1"]) {
        const refused = yield* postEmail(fake, bearer, { ...valid, sender: { id } })
        assert.deepStrictEqual([refused.status, locs(refused.body)], [422, ["body.sender.id"]], id)
      }
      const attachment = yield* postEmail(fake, bearer, {
        ...valid,
        attachment: [{ filename: "my notes.txt", type: "txt", content: "AQID" }]
      })
      assert.deepStrictEqual(locs(attachment.body), ["body.attachment.0.filename", "body.attachment.0.type"])
    }))

  it.live("issues tokens only for good passwords, challenges MFA accounts and checks expiration_seconds", () =>
    Effect.gen(function*() {
      const fake = yield* FakeCakemail.make()
      const wrong = yield* token(fake, { grant_type: "password", username: "alice@example.test", password: "x" })
      assert.strictEqual(wrong.status, 401)
      const mfa = yield* token(fake, { grant_type: "password", username: "mfa@example.test", password: "mfa-secret" })
      assert.deepStrictEqual([mfa.status, typeof mfa.body.challenge], [200, "string"])
      const short = yield* token(fake, {
        grant_type: "password",
        username: "alice@example.test",
        password: "alice-secret",
        expiration_seconds: "60"
      })
      assert.strictEqual(short.status, 422)
      const refreshed = yield* token(fake, { grant_type: "refresh_token", refresh_token: "rt-unknown" })
      assert.strictEqual(refreshed.status, 400)
    }))

  it.live("pages the senders of the token's account", () =>
    Effect.gen(function*() {
      const fake = yield* FakeCakemail.make({ maxPerPage: 2 })
      const bearer = yield* aliceToken(fake)
      const page = yield* call(fake, "/brands/default/senders?page=2&per_page=10&with_count=true", {
        headers: { authorization: `Bearer ${bearer}` }
      })
      assert.deepStrictEqual(page.body.pagination, { page: 2, per_page: 2, count: 3 })
      assert.deepStrictEqual((page.body.data as Array<{ email: string }>).map((s) => s.email), ["pending@example.test"])
      const recorded = yield* fake.requestsTo("senders")
      assert.strictEqual(recorded[0]?.query.page, "2")
    }))
})

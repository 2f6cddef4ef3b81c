import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import { CakemailSenders } from "../../src/auth/CakemailAuth.ts"
import { Senders } from "../../src/policy/Senders.ts"
import { type FakeAccount, Faults } from "../support/FakeCakemail.ts"
import { credentials, login, withCakemail } from "./harness.ts"

/** One account with many senders, every other one unconfirmed, to page through. */
const crowded: FakeAccount = {
  id: 2001,
  username: "crowd@example.test",
  password: "crowd-secret",
  mfa: false,
  senders: Array.from({ length: 7 }, (_, i) => ({
    id: `2001-${i}`,
    name: `Sender ${i}`,
    email: `s${i}@example.test`,
    confirmed: i % 2 === 0
  }))
}
const crowd = credentials(crowded.username, crowded.password)

describe("CakemailSenders", () => {
  it.live("reads every page of the account's senders with the login's token and keeps the confirmed ones", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login(crowd)
        const senders = yield* CakemailSenders
        const last = yield* senders.find(principal, "s6@example.test")
        assert.deepStrictEqual(Option.map(last, (s) => s.id), Option.some("2001-6"))
        const pages = yield* fake.requestsTo("senders")
        assert.deepStrictEqual(pages.map((r) => r.query.page), ["1", "2", "3", "4"])
        assert.strictEqual(pages[0]?.headers.authorization, `Bearer ${Redacted.value(Option.getOrThrow(principal.apiKey))}`)
      }), { fake: { accounts: [crowded], maxPerPage: 2 } }))

  it.live("never answers with an unconfirmed sender", () =>
    withCakemail(() =>
      Effect.gen(function*() {
        const principal = yield* login(crowd)
        const senders = yield* CakemailSenders
        assert.isTrue(Option.isNone(yield* senders.find(principal, "s5@example.test")))
        assert.isTrue(Option.isNone(yield* senders.findById(principal, "2001-5")))
      }), { fake: { accounts: [crowded], maxPerPage: 2 } }))

  it.live("matches addresses case-insensitively and senders by id", () =>
    withCakemail(() =>
      Effect.gen(function*() {
        const principal = yield* login()
        const senders = yield* CakemailSenders
        const found = yield* senders.find(principal, "ALICE@Example.TEST")
        assert.deepStrictEqual(Option.map(found, (s) => s.id), Option.some("1001-1"))
        const byId = yield* senders.findById(principal, "1001-2")
        assert.deepStrictEqual(Option.map(byId, (s) => s.email), Option.some("news@example.test"))
      })
    ))

  it.live("answers from the cache while the list is fresh", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login()
        const senders = yield* CakemailSenders
        yield* senders.find(principal, "alice@example.test")
        yield* senders.find(principal, "news@example.test")
        yield* senders.findById(principal, "1001-1")
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 1)
      })
    ))

  it.live("refreshes the list once on a miss, so a sender confirmed a moment ago is found", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login()
        const senders = yield* CakemailSenders
        assert.isTrue(Option.isNone(yield* senders.find(principal, "pending@example.test")))
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 2, "the first look-up and one refresh")
        yield* fake.setSender(1001, { id: "1001-3", name: "Pending", email: "pending@example.test", confirmed: true })
        const found = yield* senders.find(principal, "pending@example.test")
        assert.deepStrictEqual(Option.map(found, (s) => s.id), Option.some("1001-3"))
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 3)
      })
    ))

  it.live("does not refresh on a miss while the list is younger than the minimum interval", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login()
        const senders = yield* CakemailSenders
        assert.isTrue(Option.isNone(yield* senders.find(principal, "nobody@example.test")))
        assert.isTrue(Option.isNone(yield* senders.find(principal, "nobody@example.test")))
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 1)
      }), { senders: { minRefreshInterval: "1 minute" } }))

  it.live("keeps one list per account", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const alice = yield* login()
        const bob = yield* login(credentials("bob@example.org", "bob-secret"))
        const senders = yield* CakemailSenders
        assert.isTrue(Option.isSome(yield* senders.find(bob, "bob@example.org")))
        assert.isTrue(Option.isNone(yield* senders.find(alice, "bob@example.org")))
        const calls = yield* fake.requestsTo("senders")
        assert.strictEqual(calls.length, 3, "bob's list, alice's list and its refresh on the miss")
      })
    ))

  it.live("fails with SendersUnavailable when the list cannot be fetched, and does not cache the failure", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login()
        const senders = yield* CakemailSenders
        yield* fake.fault("senders", Faults.serverError())
        const error = yield* senders.find(principal, "alice@example.test").pipe(Effect.flip)
        assert.isTrue(error._tag === "SendersUnavailable" && error.reply.code === 451)
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 3, "two retries")
        yield* fake.clearFaults
        assert.isTrue(Option.isSome(yield* senders.find(principal, "alice@example.test")))
      })
    ))

  it.live("fails with TokenRefused, without retrying, when the token is refused", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const principal = yield* login()
        yield* fake.expireAccessTokens
        const error = yield* CakemailSenders.use((s) => s.find(principal, "alice@example.test")).pipe(Effect.flip)
        assert.strictEqual(error._tag, "TokenRefused")
        assert.strictEqual((yield* fake.requestsTo("senders")).length, 1)
        const policy = yield* Senders.pipe(Effect.provide(CakemailSenders.layerPolicy))
        const unavailable = yield* policy.allowed(principal, "alice@example.test").pipe(Effect.flip)
        assert.strictEqual(unavailable._tag, "SendersUnavailable")
      })
    ))

  it.live("answers the policy's Senders question from the confirmed senders", () =>
    withCakemail(() =>
      Effect.gen(function*() {
        const principal = yield* login()
        const policy = yield* Senders
        assert.isTrue(yield* policy.allowed(principal, "Alice@example.test"))
        assert.isFalse(yield* policy.allowed(principal, "pending@example.test"))
        assert.isFalse(yield* policy.allowed(principal, "mallory@example.test"))
      }).pipe(Effect.provide(CakemailSenders.layerPolicy))
    ))
})

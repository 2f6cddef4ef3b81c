import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import { CakemailSenders, principalExpiry } from "../../src/auth/CakemailAuth.ts"
import { mfaHint } from "../../src/cakemail/CakemailApi.ts"
import { Faults } from "../support/FakeCakemail.ts"
import { alice, credentials, login, withCakemail } from "./harness.ts"

const grantOf = (body: unknown) => (body as Record<string, string>).grant_type

describe("CakemailAuth", () => {
  it.live("exchanges the SMTP credentials for an access token with a form-encoded password grant", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const before = Date.now()
        const principal = yield* login()
        const after = Date.now()
        const [token] = yield* fake.requestsTo("token")
        assert.strictEqual(token?.headers["content-type"], "application/x-www-form-urlencoded")
        assert.deepStrictEqual(token?.body, {
          grant_type: "password",
          username: "alice@example.test",
          password: "alice-secret"
        })
        assert.strictEqual(principal.username, "alice@example.test")
        assert.strictEqual(principal.backend, "cakemail")
        assert.deepStrictEqual(principal.account, Option.some("1001"))
        assert.isTrue(Option.isNone(principal.senders))
        assert.isTrue(Option.isSome(principal.apiKey) && Redacted.value(principal.apiKey.value).startsWith("at-"))
        const expiresAt = Option.getOrThrow(principal.expiresAt)
        assert.isTrue(expiresAt >= before + 3540_000 && expiresAt <= after + 3540_000, "one minute before the token ends")
      })
    ))

  it("ends a principal a minute before its token, or halfway through a short-lived one", () => {
    assert.strictEqual(principalExpiry(1_000, 3600), 1_000 + 3540_000)
    assert.strictEqual(principalExpiry(1_000, 100), 1_000 + 50_000)
    assert.strictEqual(principalExpiry(1_000, 0), 1_000)
  })

  it.live("renews a known credential with its refresh token instead of sending the password again", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const first = yield* login()
        yield* fake.expireAccessTokens
        const second = yield* login()
        const calls = yield* fake.requestsTo("token")
        assert.deepStrictEqual(calls.map((r) => grantOf(r.body)), ["password", "refresh_token"])
        assert.isUndefined((calls[1]?.body as Record<string, string>).password)
        assert.notStrictEqual(
          Option.getOrThrow(Option.map(second.apiKey, Redacted.value)),
          Option.getOrThrow(Option.map(first.apiKey, Redacted.value))
        )
        // the renewed token is good at the API
        const senders = yield* CakemailSenders
        assert.isTrue(Option.isSome(yield* senders.find(second, "alice@example.test")))
      })
    ))

  it.live("falls back to the password grant when the refresh token is refused", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* login()
        yield* fake.revokeRefreshTokens
        const principal = yield* login()
        const calls = yield* fake.requestsTo("token")
        assert.deepStrictEqual(calls.map((r) => grantOf(r.body)), ["password", "refresh_token", "password"])
        assert.isTrue(Option.isSome(principal.apiKey))
      })
    ))

  it.live("does not renew with another password's refresh token", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* login()
        const error = yield* login(credentials("alice@example.test", "wrong")).pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "InvalidCredentials")
        const calls = yield* fake.requestsTo("token")
        assert.deepStrictEqual(calls.map((r) => grantOf(r.body)), ["password", "password"])
      })
    ))

  it.live("refuses a wrong password with InvalidCredentials after one call", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        const error = yield* login(credentials("alice@example.test", "nope")).pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "InvalidCredentials")
        assert.strictEqual(error.reply.code, 535)
        assert.strictEqual((yield* fake.requestsTo("token")).length, 1)
      })
    ))

  it.live("refuses an MFA account with a 535 that says an API-only credential is needed", () =>
    withCakemail(() =>
      Effect.gen(function*() {
        const error = yield* login(credentials("mfa@example.test", "mfa-secret")).pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "InvalidCredentials")
        assert.strictEqual(error.reply.toString(), `535 5.7.8 Authentication credentials invalid: ${mfaHint}`)
        assert.include(error.reply.text, "API-only credential")
      })
    ))

  it.live("treats a 400 of the token endpoint as bad credentials", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* fake.fault("token", Faults.status(400, { detail: "invalid_grant" }))
        const error = yield* login().pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "InvalidCredentials")
        assert.strictEqual((yield* fake.requestsTo("token")).length, 1)
      })
    ))

  it.live("reports an outage (500) as BackendUnavailable after two retries", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* fake.fault("token", Faults.serverError())
        const error = yield* login().pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "BackendUnavailable")
        assert.strictEqual(error.reply.toString(), "454 4.7.0 Temporary authentication failure, try again later")
        assert.strictEqual((yield* fake.requestsTo("token")).length, 3)
      })
    ))

  it.live("reports 429, slow and dropped answers as BackendUnavailable", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        for (const fault of [Faults.tooManyRequests(1), Faults.slow(1_500), Faults.drop()]) {
          yield* fake.clearFaults
          yield* fake.fault("token", fault)
          const error = yield* login().pipe(Effect.flip)
          assert.strictEqual(error.reason._tag, "BackendUnavailable", fault._tag)
        }
      })
    ))

  it.live("recovers when a temporary failure clears within the retries", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* fake.fault("token", Faults.serverError(), 2)
        const principal = yield* login()
        assert.isTrue(Option.isSome(principal.apiKey))
        assert.strictEqual((yield* fake.requestsTo("token")).length, 3)
      })
    ))

  it.live("reports an unreachable API as BackendUnavailable", () =>
    withCakemail((fake) =>
      Effect.gen(function*() {
        yield* fake.close
        const error = yield* login(alice).pipe(Effect.flip)
        assert.strictEqual(error.reason._tag, "BackendUnavailable")
      })
    ))
})

import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Layer, Metric, Option, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { Authenticator, makeCredentialKey } from "../../src/auth/Authenticator.ts"
import { AuthError, BackendUnavailable, CredentialStore, InvalidCredentials } from "../../src/auth/CredentialStore.ts"
import { Credentials, Principal } from "../../src/domain/Principal.ts"
import { apiKeyCacheSize } from "../../src/observability/Metrics.ts"
import { configLayer } from "../support/TestConfig.ts"

const credentials = (username: string, password: string, authzid: Option.Option<string> = Option.none()) =>
  new Credentials({ username, password: Redacted.make(password), authzid, method: "PLAIN" })

const principal = (username: string, expiresAt: Option.Option<number> = Option.none()) =>
  new Principal({
    username,
    senders: Option.some([`${username}@example.com`]),
    apiKey: Option.some(Redacted.make(`key-${username}`)),
    backend: "http",
    account: Option.none(),
    expiresAt
  })

const config = configLayer({ AUTH_CACHE_TTL: "15 minutes" })

/**
 * An Authenticator over a counting CredentialStore double: every user's password is `<name>-pw`;
 * `answer` may override what the backend says.
 */
const harness = (
  answer: (credentials: Credentials) => Effect.Effect<Principal, AuthError> = (c) =>
    Redacted.value(c.password) === `${c.username}-pw`
      ? Effect.succeed(principal(c.username))
      : Effect.fail(new AuthError({ reason: new InvalidCredentials({}) }))
) => {
  const calls: Array<string> = []
  const store = Layer.succeed(
    CredentialStore,
    CredentialStore.of({ verify: (c) => Effect.suspend(() => (calls.push(c.username), answer(c))) })
  )
  const layer = Authenticator.layer.pipe(Layer.provide([store, config]))
  return { calls, layer }
}

const reasonOf = (auth: Authenticator["Service"], creds: Credentials) =>
  Effect.map(Effect.flip(auth.verify(creds)), (error) => error.reason._tag)

describe("Authenticator", () => {
  it("keys credentials so that no split of user name and password stands for another", () => {
    const keyOf = makeCredentialKey()
    assert.strictEqual(keyOf(credentials("alice", "secret")), keyOf(credentials("alice", "secret")))
    assert.notStrictEqual(keyOf(credentials("a\0", "b")), keyOf(credentials("a", "\0b")))
    assert.notStrictEqual(keyOf(credentials("alice", "secret")), makeCredentialKey()(credentials("alice", "secret")), "a key per call")
    assert.notInclude(keyOf(credentials("alice", "secret")), "secret")
  })

  it.effect("answers a second verify of the same credentials from the cache", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const first = yield* auth.verify(credentials("alice", "alice-pw"))
      const second = yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 1)
      assert.strictEqual(second, first)
    }).pipe(Effect.provide(layer))
  })

  it.effect("asks the backend again once AUTH_CACHE_TTL has passed", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* TestClock.adjust("14 minutes")
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 1)
      yield* TestClock.adjust("1 minute")
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("remembers a rejected password for 30 seconds, then asks again", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "wrong")), "InvalidCredentials")
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "wrong")), "InvalidCredentials")
      assert.strictEqual(calls.length, 1)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "wrong")), "InvalidCredentials")
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("does not let a rejected password shadow the right one", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "wrong")), "InvalidCredentials")
      assert.strictEqual((yield* auth.verify(credentials("alice", "alice-pw"))).username, "alice")
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("does not cache a backend outage", () => {
    const { calls, layer } = harness(() => Effect.fail(new AuthError({ reason: new BackendUnavailable({ detail: "503" }) })))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "alice-pw")), "BackendUnavailable")
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "alice-pw")), "BackendUnavailable")
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("shares one backend call between concurrent verifies of the same credentials", () => {
    const { calls, layer } = harness((c) => Effect.as(Effect.sleep("1 second"), principal(c.username)))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const fiber = yield* Effect.forkChild(
        Effect.all([1, 2, 3].map(() => auth.verify(credentials("alice", "alice-pw"))), { concurrency: "unbounded" })
      )
      yield* TestClock.adjust("1 second")
      const principals = yield* Fiber.join(fiber)
      assert.deepStrictEqual(principals.map((p) => p.username), ["alice", "alice", "alice"])
      assert.strictEqual(calls.length, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("lets a verify finish when the verify whose lookup it joined is interrupted", () => {
    const { calls, layer } = harness((c) => Effect.as(Effect.sleep("1 second"), principal(c.username)))
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      const first = yield* Effect.forkChild(auth.verify(credentials("alice", "alice-pw")), { startImmediately: true })
      const second = yield* Effect.forkChild(auth.verify(credentials("alice", "alice-pw")), { startImmediately: true })
      yield* Fiber.interrupt(first)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Fiber.join(second)).username, "alice")
      assert.strictEqual(calls.length, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("refuses empty credentials and a foreign authzid without asking the backend", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      assert.strictEqual(yield* reasonOf(auth, credentials("", "x-pw")), "InvalidCredentials")
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "")), "InvalidCredentials")
      assert.strictEqual(yield* reasonOf(auth, credentials("alice", "alice-pw", Option.some("bob"))), "InvalidCredentials")
      assert.strictEqual(calls.length, 0)
      const same = yield* auth.verify(credentials("alice", "alice-pw", Option.some("alice")))
      assert.strictEqual(same.username, "alice")
      assert.strictEqual(calls.length, 1)
    }).pipe(Effect.provide(layer))
  })

  it.effect("keeps a principal no longer than its grant, less a safety margin", () => {
    let expiresAt = 0
    const { calls, layer } = harness((c) => Effect.succeed(principal(c.username, Option.some(expiresAt))))
    return Effect.gen(function*() {
      expiresAt = (yield* Clock.currentTimeMillis) + 5 * 60_000
      const auth = yield* Authenticator
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* TestClock.adjust("4 minutes")
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 1)
      yield* TestClock.adjust("30 seconds") // 30 s before expiry: leaves the cache
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("does not cache a principal whose grant is about to end", () => {
    let expiresAt = 0
    const { calls, layer } = harness((c) => Effect.succeed(principal(c.username, Option.some(expiresAt))))
    return Effect.gen(function*() {
      expiresAt = (yield* Clock.currentTimeMillis) + 10_000
      const auth = yield* Authenticator
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 2)
    }).pipe(Effect.provide(layer))
  })

  it.effect("drops the entries of an invalidated principal and keeps the others", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* auth.verify(credentials("bob", "bob-pw"))
      assert.strictEqual((yield* Metric.value(apiKeyCacheSize)).value, 2)

      yield* auth.invalidate(principal("alice"))
      assert.strictEqual((yield* Metric.value(apiKeyCacheSize)).value, 1)
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* auth.verify(credentials("bob", "bob-pw"))
      assert.deepStrictEqual(calls, ["alice", "bob", "alice"])
    }).pipe(Effect.provide(layer), Effect.provideService(Metric.MetricRegistry, new Map()))
  })

  it.effect("does not drop a principal with another API key", () => {
    const { calls, layer } = harness()
    return Effect.gen(function*() {
      const auth = yield* Authenticator
      yield* auth.verify(credentials("alice", "alice-pw"))
      yield* auth.invalidate(new Principal({ ...principal("alice"), apiKey: Option.some(Redacted.make("rotated")) }))
      yield* auth.verify(credentials("alice", "alice-pw"))
      assert.strictEqual(calls.length, 1)
    }).pipe(Effect.provide(layer))
  })
})

import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Option } from "effect"
import { RateLimiter, Redis } from "effect/persistence"
import { TestClock } from "effect/testing"
import { recipientRule } from "../../src/policy/EnvelopePolicy.ts"
import {
  authBlockDuration,
  authFailureWindow,
  Limits,
  makeLimits,
  makeMemoryLockoutStore,
  memoryRateLimiterStore
} from "../../src/policy/Limits.ts"
import { configLayer, type TestEnv } from "../support/TestConfig.ts"

const limits = (env: TestEnv = {}) => Limits.layerMemory.pipe(Layer.provide(configLayer(env)))

describe("Limits (memory)", () => {
  it.effect("lets a message through when the rate limiter store does not answer, each count giving up after a second", () =>
    Effect.gen(function*() {
      const hanging = RateLimiter.RateLimiter.of({
        [RateLimiter.TypeId]: RateLimiter.TypeId,
        consume: () => Effect.never,
        adaptiveConsume: () => Effect.never,
        adaptiveFeedback: () => Effect.never
      })
      const l = yield* makeLimits(makeMemoryLockoutStore(), Duration.seconds(1)).pipe(
        Effect.provideService(RateLimiter.RateLimiter, hanging),
        Effect.provide(configLayer())
      )
      const fiber = yield* Effect.forkChild(l.consumeMessage("192.0.2.1", "alice"))
      yield* TestClock.adjust("999 millis")
      assert.isUndefined(fiber.pollUnsafe(), "still waiting before the second is up")
      // the per-IP count gives up at 1 s, then the per-user count at 2 s
      yield* TestClock.adjust("1 second")
      assert.isUndefined(fiber.pollUnsafe(), "the per-user count is still waiting")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
    }))

  it.effect("refuses the message over RATE_LIMIT_PER_IP until the minute has passed", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      yield* l.consumeMessage("192.0.2.1", "alice")
      yield* l.consumeMessage("192.0.2.1", "bob")
      const refused = yield* Effect.flip(l.consumeMessage("192.0.2.1", "carol"))
      assert.strictEqual(refused.scope, "ip")
      assert.match(refused.reply.toString(), /^451 4\.7\.1 Rate limit exceeded, try again in \d+ seconds$/)
      yield* l.consumeMessage("192.0.2.2", "carol") // another address
      yield* TestClock.adjust("61 seconds")
      yield* l.consumeMessage("192.0.2.1", "carol")
    }).pipe(Effect.provide(limits({ RATE_LIMIT_PER_IP: "2" }))))

  it.effect("counts the per-IP rate of IPv6 clients by their /64", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      yield* l.consumeMessage("2001:db8:1:2::1", "alice")
      yield* l.consumeMessage("2001:db8:1:2::2", "bob")
      const refused = yield* Effect.flip(l.consumeMessage("2001:db8:1:2:ffff::3", "carol"))
      assert.strictEqual(refused.scope, "ip")
      yield* l.consumeMessage("2001:db8:1:3::1", "carol") // another /64
    }).pipe(Effect.provide(limits({ RATE_LIMIT_PER_IP: "2" }))))

  it.effect("blocks AUTH for the IPv6 /64 the failures came from, not only the address", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      yield* l.recordAuthFailure("2001:db8:1:2::1", "alice")
      assert.isTrue((yield* l.recordAuthFailure("2001:db8:1:2::2", "alice")).blocked)
      assert.strictEqual((yield* Effect.flip(l.checkAuth("2001:db8:1:2::3", "alice"))).scope, "pair")
      yield* l.checkAuth("2001:db8:1:3::1", "alice")
    }).pipe(Effect.provide(limits({ AUTH_FAILURE_LIMIT: "2" }))))

  it.effect("exempts ALLOWLIST_CIDRS from the per-IP rate, not from the per-user rate", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      for (let i = 0; i < 5; i++) yield* l.consumeMessage("10.1.2.3", `user${i}`)
      yield* l.consumeMessage("10.1.2.3", "alice")
      yield* l.consumeMessage("10.1.2.3", "alice")
      assert.strictEqual((yield* Effect.flip(l.consumeMessage("10.1.2.3", "ALICE"))).scope, "user")
    }).pipe(Effect.provide(limits({ RATE_LIMIT_PER_IP: "1", RATE_LIMIT_PER_USER: "2", ALLOWLIST_CIDRS: "10.0.0.0/8" }))))

  it.effect("counts AUTH failures over 5 minutes and blocks the pair for an hour", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      assert.isFalse((yield* l.recordAuthFailure("192.0.2.9", "alice")).blocked)
      yield* TestClock.adjust(Duration.sum(authFailureWindow, Duration.seconds(1))) // the first failure expires
      assert.isFalse((yield* l.recordAuthFailure("192.0.2.9", "alice")).blocked)
      assert.isTrue((yield* l.recordAuthFailure("192.0.2.9", "alice")).blocked)
      assert.strictEqual((yield* Effect.flip(l.checkAuth("192.0.2.9", "alice"))).scope, "pair")
      yield* l.checkAuth("192.0.2.10", "alice")
      yield* l.checkAuth("192.0.2.9", "bob")
      yield* TestClock.adjust(Duration.sum(authBlockDuration, Duration.seconds(1)))
      yield* l.checkAuth("192.0.2.9", "alice")
    }).pipe(Effect.provide(limits({ AUTH_FAILURE_LIMIT: "2" }))))

  it.effect("doubles the delay before each 535 of a pair, up to 8 seconds", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      const delays: Array<number> = []
      for (let i = 0; i < 6; i++) delays.push(Duration.toMillis((yield* l.recordAuthFailure("192.0.2.9", "alice")).delay))
      assert.deepStrictEqual(delays, [1000, 2000, 4000, 8000, 8000, 8000])
    }).pipe(Effect.provide(limits({ AUTH_FAILURE_LIMIT: "100", AUTH_FAILURE_DELAY: "1 second" }))))
})

describe("Limits (Redis)", () => {
  // a Redis client that never answers, as one reconnecting queues every command
  const silent = Redis.Redis.of({
    send: () => Effect.never,
    eval: () => () => Effect.never,
    subscribe: () => Effect.never
  } as unknown as Redis.Redis["Service"])
  const redisLimits = Limits.layerRedis.pipe(Layer.provide([configLayer(), Layer.succeed(Redis.Redis, silent)]))

  it.effect("lets MAIL and AUTH through when Redis does not answer, each store call giving up after a second", () =>
    Effect.gen(function*() {
      const l = yield* Limits
      // two counts (IP, user) and two block checks (IP, pair): 1 s each
      const mail = yield* Effect.forkChild(l.consumeMessage("192.0.2.1", "alice"))
      const auth = yield* Effect.forkChild(l.checkAuth("192.0.2.1", "alice"))
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(mail.pollUnsafe(), "MAIL still waiting")
      assert.isUndefined(auth.pollUnsafe(), "AUTH still waiting")
      yield* TestClock.adjust("1 millis")
      assert.isTrue(Exit.isSuccess(mail.pollUnsafe()!), "MAIL let through")
      assert.isTrue(Exit.isSuccess(auth.pollUnsafe()!), "AUTH let through")
    }).pipe(Effect.provide(redisLimits)))
})

describe("the rate limiter's memory store", () => {
  const limiter = (capacity: number) => RateLimiter.layer.pipe(Layer.provide(memoryRateLimiterStore(capacity)))
  /** One message for `key` at one per `window`: true when it is let through. */
  const consume = (key: string, window: Duration.Input = "1 minute") =>
    RateLimiter.RateLimiter.use((l) =>
      l.consume({ key, limit: 1, window, algorithm: "fixed-window", onExceeded: "fail" })
    ).pipe(Effect.as(true), Effect.catchReason("RateLimiterError", "RateLimitExceeded", () => Effect.succeed(false)))

  it.effect("forgets the oldest counters once it holds `capacity` keys, a 64th of them at once", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 641; i++) yield* consume(`k${i}`)
      // 641 keys in a store of 640: the 10 oldest are forgotten, the 11th is still counted (asked
      // first: each key let through below is counted anew)
      assert.isFalse(yield* consume("k10"))
      for (let i = 9; i >= 0; i--) assert.isTrue(yield* consume(`k${i}`), `k${i} forgotten`)
    }).pipe(Effect.provide(limiter(640))))

  it.effect("drops counters whose window has passed before any live one, even an older one", () =>
    Effect.gen(function*() {
      assert.isTrue(yield* consume("live", "1 hour"))
      for (let i = 0; i < 127; i++) yield* consume(`old${i}`)
      yield* TestClock.adjust("2 minutes")
      assert.isTrue(yield* consume("new")) // the store is full: the 127 expired counters go
      assert.isFalse(yield* consume("live", "1 hour"), "still counted")
    }).pipe(Effect.provide(limiter(128))))
})

describe("recipient rules", () => {
  it("names the rule a recipient breaks, or none", () => {
    assert.deepStrictEqual(recipientRule("bob@[192.0.2.1]"), Option.some("address-literal"))
    assert.deepStrictEqual(recipientRule("bob@192.0.2.1"), Option.some("address-literal"))
    assert.deepStrictEqual(recipientRule("bob@LocalHost"), Option.some("local-domain"))
    assert.deepStrictEqual(recipientRule("bob@mail.localhost"), Option.some("local-domain"))
    assert.deepStrictEqual(recipientRule("a%b@example.net"), Option.some("routing"))
    assert.deepStrictEqual(recipientRule("host!bob@example.net"), Option.some("routing"))
    assert.deepStrictEqual(recipientRule("bob@example.net"), Option.none())
  })
})

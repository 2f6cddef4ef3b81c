import { NodeRedis } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, type Duration, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { type Claim, type Delivered, DuplicateWindow } from "../../src/delivery/DuplicateWindow.ts"
import { startRedis } from "../support/Redis.ts"

const delivered = (gatewayId: string, at = 0): Delivered => ({ upstreamId: `api-${gatewayId}`, gatewayId, at })

const claimed = (claim: Claim) => {
  assert.strictEqual(claim._tag, "Claimed")
  if (claim._tag !== "Claimed") throw new Error("unreachable")
  return claim
}

const claim = (key: string) => DuplicateWindow.use((window) => window.claim(key))

describe("DuplicateWindow in memory", () => {
  const window = (capacity?: number) =>
    DuplicateWindow.layerMemory({ ttl: "1 hour", hold: "35 seconds", ...(capacity === undefined ? {} : { capacity }) })

  it.effect("answers Delivered for a key completed before, with what was recorded", () =>
    Effect.gen(function*() {
      const first = claimed(yield* claim("k1"))
      yield* first.complete(delivered("G1"))
      const again = yield* claim("k1")
      assert.deepStrictEqual(again, { _tag: "Delivered", delivered: delivered("G1") })
    }).pipe(Effect.provide(window())))

  it.effect("lets the next caller claim a key whose holder released it", () =>
    Effect.gen(function*() {
      yield* claimed(yield* claim("k1")).release
      claimed(yield* claim("k1"))
    }).pipe(Effect.provide(window())))

  it.effect("makes a second caller wait while the key is in flight, then answers Delivered", () =>
    Effect.gen(function*() {
      const first = claimed(yield* claim("k1"))
      const second = yield* Effect.forkChild(claim("k1"))
      yield* TestClock.adjust("10 seconds")
      assert.isUndefined(second.pollUnsafe())
      yield* first.complete(delivered("G1"))
      assert.deepStrictEqual(yield* Fiber.join(second), { _tag: "Delivered", delivered: delivered("G1") })
    }).pipe(Effect.provide(window())))

  it.effect("forgets a delivered key after DEDUPE_WINDOW", () =>
    Effect.gen(function*() {
      yield* claimed(yield* claim("k1")).complete(delivered("G1"))
      yield* TestClock.adjust("59 minutes")
      assert.strictEqual((yield* claim("k1"))._tag, "Delivered")
      yield* TestClock.adjust("1 minute")
      claimed(yield* claim("k1"))
    }).pipe(Effect.provide(window())))

  it.effect("answers an upstream id that holds spaces and odd characters exactly as recorded", () =>
    Effect.gen(function*() {
      const recorded = { upstreamId: " id with  spaces | and ünïcode ", gatewayId: "0MI9X2K3L4ABCDEFGHIJ", at: 1_790_000_000_123 }
      yield* claimed(yield* claim("k1")).complete(recorded)
      assert.deepStrictEqual(yield* claim("k1"), { _tag: "Delivered", delivered: recorded })
    }).pipe(Effect.provide(window())))

  it.effect("keeps at most `capacity` entries, dropping the oldest", () =>
    Effect.gen(function*() {
      for (const key of ["a", "b", "c"]) yield* claimed(yield* claim(key)).complete(delivered(key))
      claimed(yield* claim("a"))
      assert.strictEqual((yield* claim("c"))._tag, "Delivered")
    }).pipe(Effect.provide(window(2))))

  it.effect("once full, drops its oldest 64th at once and keeps every newer entry", () =>
    Effect.gen(function*() {
      const keys = Array.from({ length: 641 }, (_, i) => `k${i}`)
      for (const key of keys) yield* claimed(yield* claim(key)).complete(delivered(key))
      // 641 entries in a window of 640: the 10 oldest go (640 / 64), the rest stay
      const tags = []
      for (const key of keys) tags.push((yield* claim(key))._tag)
      assert.deepStrictEqual(tags, [...Array(10).fill("Claimed"), ...Array(631).fill("Delivered")])
    }).pipe(Effect.provide(window(640))))
})

/** One Redis server for the block; each window is a separate client, as two gateway processes are. */
class TestRedis extends Context.Service<TestRedis, { readonly url: string }>()("test/TestRedis") {
  static readonly layer = Layer.effect(TestRedis, startRedis)
}

/** A window with its own Redis client, open for the rest of the test. */
const redisWindow = (ttl: Duration.Input = "1 hour") =>
  Effect.gen(function*() {
    const { url } = yield* TestRedis
    const context = yield* Layer.build(
      DuplicateWindow.layerRedis({ ttl, hold: "35 seconds", prefix: "test:dedupe:" }).pipe(
        Layer.provideMerge(NodeRedis.layer({ url }))
      )
    )
    return { window: Context.get(context, DuplicateWindow), client: Context.get(context, NodeRedis.NodeRedis).client }
  })

layer(TestRedis.layer, { excludeTestServices: true, timeout: "30 seconds" })("DuplicateWindow in Redis", (it) => {
  it.effect("answers Delivered to another process for a key one process completed", () =>
    Effect.gen(function*() {
      const one = yield* redisWindow()
      const two = yield* redisWindow()
      const key = `shared-${Math.random()}`
      yield* claimed(yield* one.window.claim(key)).complete(delivered("G1", 17))
      assert.deepStrictEqual(yield* two.window.claim(key), { _tag: "Delivered", delivered: delivered("G1", 17) })
    }))

  it.effect("makes a second process wait while the key is in flight, and lets it claim after a release", () =>
    Effect.gen(function*() {
      const one = yield* redisWindow()
      const two = yield* redisWindow()
      const key = `inflight-${Math.random()}`
      const first = claimed(yield* one.window.claim(key))
      const second = yield* Effect.forkChild(two.window.claim(key))
      yield* Effect.sleep("200 millis")
      assert.isUndefined(second.pollUnsafe())
      yield* first.release
      yield* claimed(yield* Fiber.join(second)).complete(delivered("G2"))
      assert.strictEqual((yield* one.window.claim(key))._tag, "Delivered")
    }))

  it.effect("forgets a delivered key after its TTL", () =>
    Effect.gen(function*() {
      const { window } = yield* redisWindow("300 millis")
      const key = `ttl-${Math.random()}`
      yield* claimed(yield* window.claim(key)).complete(delivered("G1"))
      assert.strictEqual((yield* window.claim(key))._tag, "Delivered")
      yield* Effect.sleep("400 millis")
      claimed(yield* window.claim(key))
    }))

  it.effect("fails open, answering Claimed, when Redis cannot be reached", () =>
    Effect.gen(function*() {
      const { client, window } = yield* redisWindow()
      yield* Effect.promise(() => client.close())
      claimed(yield* window.claim(`down-${Math.random()}`))
    }))
})

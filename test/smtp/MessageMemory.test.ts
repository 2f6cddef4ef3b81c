import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Metric, Scope } from "effect"
import { messageMemory } from "../../src/observability/Metrics.ts"
import { MessageMemory } from "../../src/smtp/MessageMemory.ts"

describe("MessageMemory", () => {
  it.effect("lets messages take bytes up to the limit and no further", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(1000)
      const first = yield* memory.reserve
      const second = yield* memory.reserve
      assert.isTrue(first.take(600))
      assert.isFalse(second.take(401), "600 + 401 passes 1000")
      assert.strictEqual(second.bytes(), 0, "a refused take takes nothing")
      assert.isTrue(second.take(400))
      assert.strictEqual(memory.held(), 1000)
      const refusal = second.refusal(401)
      assert.deepStrictEqual([refusal.needed, refusal.held, refusal.limit], [401, 600, 1000])
      assert.strictEqual(refusal.reply.toString(), "452 4.3.1 Insufficient system storage, try again later")
    }))

  it.effect("gives a message's bytes back when its scope closes, and reports what is held", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(1000)
      const scope = yield* Scope.make()
      const reservation = yield* Scope.provide(memory.reserve, scope)
      reservation.take(700)
      yield* memory.report
      assert.strictEqual((yield* Metric.value(messageMemory)).value, 700)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(memory.held(), 0)
      assert.strictEqual((yield* Metric.value(messageMemory)).value, 0)
      reservation.release()
      assert.strictEqual(memory.held(), 0, "releasing twice gives nothing back twice")
    }))

  it.effect("refuses a declared size larger than what is free now", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(1000)
      const holder = yield* memory.reserve
      holder.take(800)
      assert.isTrue(Exit.isSuccess(yield* Effect.exit(memory.checkFree(200))))
      const refused = yield* Effect.flip(memory.checkFree(201))
      assert.deepStrictEqual([refused._tag, refused.needed, refused.held], ["InsufficientStorage", 201, 800])
    }))
})

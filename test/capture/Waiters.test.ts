import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Result } from "effect"
import { TestClock } from "effect/testing"
import { makeWaiters } from "../../src/capture/Waiters.ts"

describe("Waiters", () => {
  it.effect("wakes every waiter, not only the last one to start waiting", () =>
    Effect.gen(function*() {
      const waiters = makeWaiters()
      let lines = 0
      // both are waiting before anything changes: only wake() can end them
      const first = yield* Effect.forkChild(
        waiters.until(() => (lines >= 1 ? Result.succeed("first") : undefined), "1 second", () => "late"),
        { startImmediately: true }
      )
      const second = yield* Effect.forkChild(
        waiters.until(() => (lines >= 2 ? Result.succeed("second") : undefined), "1 second", () => "late"),
        { startImmediately: true }
      )
      lines = 1
      assert.isUndefined(first.pollUnsafe(), "nothing ends without a wake")
      waiters.wake()
      assert.strictEqual(yield* Fiber.join(first), "first")
      assert.isUndefined(second.pollUnsafe(), "the second still waits for its own condition")
      lines = 2
      waiters.wake()
      assert.strictEqual(yield* Fiber.join(second), "second")
    }))

  it.effect("ends at once when the condition already holds, and with the failure a poll gives", () =>
    Effect.gen(function*() {
      const waiters = makeWaiters()
      assert.strictEqual(yield* waiters.until(() => Result.succeed(1), "1 second", () => "late"), 1)
      const failed = yield* Effect.exit(waiters.until(() => Result.fail("the process exited"), "1 second", () => "late"))
      assert.deepStrictEqual(failed, Exit.fail("the process exited"))
    }))

  it.effect("fails with onTimeout when nothing wakes it in time", () =>
    Effect.gen(function*() {
      const waiters = makeWaiters()
      const waiting = yield* Effect.forkChild(Effect.exit(waiters.until(() => undefined, "5 seconds", () => "timed out")))
      yield* TestClock.adjust("5 seconds")
      assert.deepStrictEqual(yield* Fiber.join(waiting), Exit.fail("timed out"))
    }))
})

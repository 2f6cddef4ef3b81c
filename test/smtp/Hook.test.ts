import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, FiberSet, Option, Result } from "effect"
import { SenderRejected } from "../../src/domain/Errors.ts"
import { Replies } from "../../src/domain/Reply.ts"
import * as Hook from "../../src/smtp/Hook.ts"

/** Runs `effect` through Hook.run on a FiberSet and collects every outcome handed to `respond`. */
const outcomes = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const seen: Array<Hook.Outcome<A>> = []
    yield* Effect.scoped(Effect.gen(function*() {
      const set = yield* FiberSet.make<unknown, unknown>()
      const fork = yield* FiberSet.runtime(set)<never>()
      Hook.run(fork, effect, (outcome) => seen.push(outcome))
      yield* Effect.yieldNow
    }))
    yield* Effect.sleep("10 millis")
    return seen
  })

describe("Hook", () => {
  it.live("hands over the value of a hook that succeeds", () =>
    Effect.gen(function*() {
      const seen = yield* outcomes(Effect.succeed(42))
      assert.deepStrictEqual(seen, [Result.succeed(42)])
    }))

  it.live("answers a typed refusal with exactly its reply", () =>
    Effect.gen(function*() {
      const seen = yield* outcomes(Effect.fail(new SenderRejected({ address: "x@example.test", where: "mail-from" })))
      assert.deepStrictEqual(seen, [Result.fail(Replies.senderNotAllowed)])
    }))

  it.live("answers a defect with 451 4.3.0 and never shows its text", () =>
    Effect.gen(function*() {
      const seen = yield* outcomes(Effect.die(new Error("secret detail")))
      assert.deepStrictEqual(seen, [Result.fail(Replies.internalError)])
      assert.strictEqual(Hook.toServerError(Replies.internalError).message, "4.3.0 Internal error, try again later")
    }))

  it.live("answers a hook interrupted by the end of its session with 421 4.3.2, exactly once", () =>
    Effect.gen(function*() {
      const seen = yield* outcomes(Effect.never)
      assert.deepStrictEqual(seen, [Result.fail(Replies.shuttingDown)])
    }))

  it.live("answers 421 4.3.2 when the session is already gone", () =>
    Effect.gen(function*() {
      const seen: Array<Hook.Outcome<number>> = []
      Hook.run(undefined, Effect.succeed(1), (outcome) => seen.push(outcome))
      assert.deepStrictEqual(seen, [Result.fail(Replies.shuttingDown)])
      const fork = yield* Effect.scoped(Effect.flatMap(FiberSet.make<unknown, unknown>(), (set) => FiberSet.runtime(set)<never>()))
      const late: Array<Hook.Outcome<number>> = []
      Hook.run(fork, Effect.succeed(1), (outcome) => late.push(outcome))
      assert.deepStrictEqual(late, [Result.fail(Replies.shuttingDown)])
    }))

  it("reads a refusal's reply from a cause, but not when a defect comes with it", () => {
    const refused = Cause.fail(new SenderRejected({ address: "x@example.test", where: "mail-from" }))
    assert.deepStrictEqual(Hook.refusalOf(refused), Option.some(Replies.senderNotAllowed))
    assert.isTrue(Option.isNone(Hook.refusalOf(Cause.combine(refused, Cause.die(new Error("boom"))))))
    assert.isTrue(Option.isNone(Hook.refusalOf(Cause.fail(new Error("no reply")))))
  })

  it("writes replies so smtp-server sends them unchanged", () => {
    const error = Hook.toServerError(Replies.tooManyRecipients)
    assert.strictEqual(error.responseCode, 452)
    assert.strictEqual(`${error.responseCode} ${error.message}`, Replies.tooManyRecipients.toString())
    assert.isTrue(Hook.carriesEnhancedCode(error.message))
    assert.isFalse(Hook.carriesEnhancedCode("Error: command not recognized"))
  })
})

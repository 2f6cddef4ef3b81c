import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Layer, Redacted, Tracer } from "effect"
import { TestClock, TestConsole } from "effect/testing"
import * as Logging from "../../src/observability/Logging.ts"
import { configLayer } from "../support/TestConfig.ts"

const logging = (env: Record<string, string>) =>
  Logging.layer.pipe(Layer.provide(configLayer(env)))

/** What the logger wrote through the (test) Console, one string per call. */
const lines = Effect.map(TestConsole.logLines, (all) => all.map(String))
const objects = Effect.map(lines, (all) => all.map((line) => JSON.parse(line) as Record<string, unknown>))

describe("Logging", () => {
  it.effect("writes one JSON object per line with time, lowercase level, message and annotations", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-05-06T07:08:09.010Z"))
      yield* Effect.logInfo("client connected").pipe(
        Effect.annotateLogs({ sessionId: "s-1", remote_port: 4242 })
      )
      const written = yield* lines
      assert.strictEqual(written.length, 1)
      assert.notInclude(written[0]!, "\n")
      assert.deepStrictEqual(JSON.parse(written[0]!), {
        time: "2026-05-06T07:08:09.010Z",
        level: "info",
        message: "client connected",
        session_id: "s-1",
        remote_port: 4242
      })
    }).pipe(Effect.provide(logging({ LOG_FORMAT: "json" }))))

  it.effect("joins message parts, encoding what is not a string as JSON", () =>
    Effect.gen(function*() {
      yield* Effect.logWarning("upstream said", { status: 503 }, 2, "times")
      const [line] = yield* objects
      assert.strictEqual(line!.message, "upstream said {\"status\":503} 2 times")
      assert.strictEqual(line!.level, "warn")
    }).pipe(Effect.provide(logging({}))))

  it.effect("carries trace_id and span_id inside a span, and neither outside", () =>
    Effect.gen(function*() {
      const span = yield* Effect.logInfo("inside").pipe(
        Effect.andThen(Effect.currentSpan),
        Effect.withSpan("smtp.session")
      )
      yield* Effect.logInfo("outside")
      const [inside, outside] = yield* objects
      assert.strictEqual(inside!.trace_id, span.traceId)
      assert.strictEqual(inside!.span_id, span.spanId)
      assert.notProperty(outside, "trace_id")
      assert.notProperty(outside, "span_id")
    }).pipe(Effect.provide(logging({}))))

  it.effect("prints Redacted values as <redacted>, in the message and in annotations", () =>
    Effect.gen(function*() {
      const secret = Redacted.make("hunter2")
      yield* Effect.logInfo("auth", secret, { password: secret }).pipe(Effect.annotateLogs({ api_key: secret }))
      const [written] = yield* lines
      assert.notInclude(written!, "hunter2")
      const line = JSON.parse(written!) as Record<string, unknown>
      assert.strictEqual(line.message, "auth <redacted> {\"password\":\"<redacted>\"}")
      assert.strictEqual(line.api_key, "<redacted>")
    }).pipe(Effect.provide(logging({}))))

  it.effect("adds the pretty cause to error lines", () =>
    Effect.gen(function*() {
      yield* Effect.logError("delivery failed", Cause.fail(new Error("connection reset")))
      const [line] = yield* objects
      assert.strictEqual(line!.level, "error")
      assert.strictEqual(line!.message, "delivery failed")
      assert.include(String(line!.cause), "connection reset")
    }).pipe(Effect.provide(logging({}))))

  it.effect("drops entries below LOG_LEVEL", () =>
    Effect.gen(function*() {
      yield* Effect.logDebug("noise")
      yield* Effect.logInfo("chatter")
      yield* Effect.logWarning("worth a look")
      assert.deepStrictEqual((yield* objects).map((l) => l.message), ["worth a look"])
    }).pipe(Effect.provide(logging({ LOG_LEVEL: "warn" }))))

  it.effect("turns log entries into events of the current span", () =>
    Effect.gen(function*() {
      const span = yield* Effect.logInfo("inside a span").pipe(
        Effect.andThen(Effect.currentSpan),
        Effect.withSpan("delivery.submit")
      )
      assert.instanceOf(span, Tracer.NativeSpan)
      if (span instanceof Tracer.NativeSpan) {
        assert.deepStrictEqual(span.events.map(([name]) => name), ["inside a span"])
      }
    }).pipe(Effect.provide(logging({}))))

  it.effect("uses Effect's pretty logger when LOG_FORMAT=pretty", () =>
    Effect.gen(function*() {
      yield* Effect.logInfo("hello there")
      const written = (yield* TestConsole.logLines).map(String).join("\n")
      assert.include(written, "hello there")
      assert.isFalse(written.trimStart().startsWith("{"))
    }).pipe(Effect.provide(logging({ LOG_FORMAT: "pretty" }))))
})

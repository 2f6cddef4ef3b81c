import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Layer, Metric, Option, Scope, Tracer } from "effect"
import { TestClock } from "effect/testing"
import { GatewayConfig } from "../../src/Config.ts"
import { Delivery, DeliveryError, idempotencyKey } from "../../src/delivery/Delivery.ts"
import { MemoryUpstream, Upstream, UpstreamError } from "../../src/delivery/Upstream.ts"
import { Replies } from "../../src/domain/Reply.ts"
import { circuitBreakerState } from "../../src/observability/Metrics.ts"
import { configLayer } from "../support/TestConfig.ts"
import { tempDir } from "../support/TestGateway.ts"
import { mailbox, request } from "./fixtures.ts"

/** A configuration over `env` with a temporary DATA_DIR (for dead-letter records), removed with the layer. */
const testConfig = (env: Record<string, string>) =>
  Layer.unwrap(Effect.map(tempDir("delivery-test-"), (dir) => configLayer({ DATA_DIR: dir, ...env })))

const withUpstream = (upstream: Layer.Layer<Upstream | MemoryUpstream>) => (env: Record<string, string> = {}) =>
  Delivery.layer.pipe(Layer.provideMerge(upstream), Layer.provideMerge(testConfig(env)))
const wholeMessage = withUpstream(Upstream.layerMemory)
const perRecipient = withUpstream(Upstream.layerMemoryPerRecipient)

const deliver = (recipients?: ReadonlyArray<string>, overrides?: Parameters<typeof request>[1]) =>
  Delivery.use((delivery) => delivery.deliver(request(recipients, overrides)))

const rejected = (detail: string) => new UpstreamError({ kind: "Rejected", detail, status: 422 })
const unavailable = (retryAfterMillis?: number) =>
  new UpstreamError({
    kind: "Temporary",
    detail: retryAfterMillis === undefined ? "HTTP 503" : "HTTP 429",
    status: retryAfterMillis === undefined ? 503 : 429,
    ...(retryAfterMillis === undefined ? {} : { retryAfterMillis })
  })

const sentCount = MemoryUpstream.use((memory) => Effect.map(memory.sent, (sent) => sent.length))

describe("Delivery", () => {
  it.effect("submits the whole message once, with every recipient, to a whole-message upstream", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.enqueue(MemoryUpstream.accept("api-1"))
      const receipt = yield* deliver(["bob@example.net", "carol@example.org"])
      const sent = yield* memory.sent
      assert.strictEqual(sent.length, 1)
      assert.deepStrictEqual<ReadonlyArray<string>>(sent[0]!.recipients, ["bob@example.net", "carol@example.org"])
      const r = request(["bob@example.net", "carol@example.org"])
      assert.strictEqual(sent[0]!.idempotencyKey, idempotencyKey(r, r.recipients))
      assert.match(sent[0]!.idempotencyKey, /^[0-9a-f]{64}$/)
      assert.deepStrictEqual(receipt, {
        gatewayId: "0ABCDEF12XYZ",
        duplicate: false,
        skipped: 0,
        accepted: [
          { recipient: mailbox("bob@example.net"), upstreamId: "api-1" },
          { recipient: mailbox("carol@example.org"), upstreamId: "api-1" }
        ],
        refused: []
      })
    }).pipe(Effect.provide(wholeMessage())))

  it.effect("submits once per recipient, each with its own idempotency key, to a per-recipient upstream", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      const receipt = yield* deliver(["bob@example.net", "carol@example.org", "dave@example.org"])
      const sent = yield* memory.sent
      assert.deepStrictEqual(sent.map((o) => o.recipients.length), [1, 1, 1])
      assert.deepStrictEqual(
        sent.map((o) => o.recipients[0]).sort(),
        ["bob@example.net", "carol@example.org", "dave@example.org"]
      )
      assert.strictEqual(new Set(sent.map((o) => o.idempotencyKey)).size, 3)
      assert.strictEqual(receipt.accepted.length, 3)
      assert.deepStrictEqual(receipt.refused, [])
    }).pipe(Effect.provide(perRecipient())))

  it.effect("derives the idempotency key from principal, Message-ID, received digest and recipients", () =>
    Effect.sync(() => {
      const base = request(["bob@example.net"])
      const key = idempotencyKey(base, base.recipients)
      assert.strictEqual(key, idempotencyKey(request(["bob@example.net"], { id: "0OTHERID" }), base.recipients))
      const otherBytes = request(["bob@example.net"], { received: { ...base.received, sha256: "0".repeat(64) } })
      assert.notStrictEqual(idempotencyKey(otherBytes, base.recipients), key)
      assert.notStrictEqual(idempotencyKey(request(["bob@example.net"], { messageId: "<m2@example.com>" }), base.recipients), key)
      assert.notStrictEqual(idempotencyKey(base, [mailbox("carol@example.org")]), key)
      assert.strictEqual(
        idempotencyKey(base, [mailbox("bob@example.net"), mailbox("carol@example.org")]),
        idempotencyKey(base, [mailbox("carol@example.org"), mailbox("bob@example.net")])
      )
    }))

  describe("partial outcomes", () => {
    it.effect("accepts the message, names the refused recipients and writes a dead-letter record without the body", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith((o) =>
          o.recipients[0] === "carol@example.org"
            ? MemoryUpstream.fail(rejected("mailbox unknown"))
            : MemoryUpstream.accept(`id-${o.recipients[0]}`)
        )
        const receipt = yield* deliver(["bob@example.net", "carol@example.org"])
        assert.deepStrictEqual(receipt.accepted, [{ recipient: mailbox("bob@example.net"), upstreamId: "id-bob@example.net" }])
        assert.deepStrictEqual(receipt.refused, [{ recipient: mailbox("carol@example.org"), reason: "mailbox unknown" }])

        const { dataDir } = yield* GatewayConfig
        const text = fs.readFileSync(path.join(dataDir, "dead-letter", "1970-01-01.jsonl"), "utf8")
        const lines = text.trim().split("\n")
        assert.strictEqual(lines.length, 1)
        assert.deepStrictEqual(JSON.parse(lines[0]!), {
          time: "1970-01-01T00:00:00.000Z",
          session_id: "session-1",
          gateway_id: "0ABCDEF12XYZ",
          message_id: "<m1@example.com>",
          recipient: "carol@example.org",
          reason: "mailbox unknown"
        })
        assert.notInclude(text, "Hi Bob")
        assert.strictEqual(fs.statSync(path.join(dataDir, "dead-letter", "1970-01-01.jsonl")).mode & 0o777, 0o600)
      }).pipe(Effect.provide(perRecipient())))

    it.effect("refuses the message, keeping the upstream's reason, when every recipient was refused", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.fail(rejected("content refused")))
        const error = yield* Effect.flip(deliver(["bob@example.net", "carol@example.org"]))
        assert.instanceOf(error, DeliveryError)
        assert.strictEqual(error.kind, "Rejected")
        assert.deepStrictEqual(error.reply, Replies.upstreamRejected("content refused"))
        const { dataDir } = yield* GatewayConfig
        assert.isFalse(fs.existsSync(path.join(dataDir, "dead-letter", "1970-01-01.jsonl")))
      }).pipe(Effect.provide(perRecipient())))

    it.effect("fails temporarily when any recipient failed temporarily, even if others were accepted", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith((o) =>
          o.recipients[0] === "carol@example.org"
            ? MemoryUpstream.fail(unavailable())
            : o.recipients[0] === "dave@example.org"
            ? MemoryUpstream.fail(rejected("no"))
            : MemoryUpstream.accept()
        )
        const fiber = yield* Effect.forkChild(Effect.flip(deliver(["bob@example.net", "carol@example.org", "dave@example.org"])))
        yield* TestClock.adjust("30 seconds")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error.kind, "Temporary")
        assert.strictEqual(error.reply.toString(), Replies.upstreamTemporary.toString())
      }).pipe(Effect.provide(perRecipient())))
  })

  describe("classification", () => {
    const cases = [
      { name: "a timeout", error: new UpstreamError({ kind: "Timeout", detail: "t" }), retried: true, reply: "451 4.4.1" },
      { name: "a reset or refused connection", error: new UpstreamError({ kind: "Temporary", detail: "unreachable" }), retried: true, reply: "451 4.3.0" },
      { name: "a 5xx", error: unavailable(), retried: true, reply: "451 4.3.0" },
      { name: "a 429 with Retry-After", error: unavailable(1000), retried: true, reply: "451 4.7.1" },
      { name: "a 400 or 422", error: rejected("bad"), retried: false, reply: "554 5.6.0" },
      { name: "a rejected status", error: new UpstreamError({ kind: "Rejected", detail: "status rejected" }), retried: false, reply: "554 5.6.0" },
      { name: "a 413", error: new UpstreamError({ kind: "TooLarge", detail: "HTTP 413", status: 413 }), retried: false, reply: "552 5.3.4" },
      { name: "a 401 or 403", error: new UpstreamError({ kind: "Unauthorized", detail: "HTTP 401", status: 401 }), retried: false, reply: "550 5.7.1" }
    ] as const
    for (const c of cases) {
      it.effect(`${c.retried ? "retries" : "does not retry"} ${c.name} and answers ${c.reply}`, () =>
        Effect.gen(function*() {
          const memory = yield* MemoryUpstream
          yield* memory.answerWith(() => MemoryUpstream.fail(c.error))
          const fiber = yield* Effect.forkChild(Effect.flip(deliver()))
          yield* TestClock.adjust("30 seconds")
          const error = yield* Fiber.join(fiber)
          assert.strictEqual(yield* sentCount, c.retried ? 3 : 1)
          assert.strictEqual(`${error.reply.code} ${error.reply.enhanced}`, c.reply)
        }).pipe(Effect.provide(wholeMessage())))
    }
  })

  describe("retries", () => {
    it.effect("retries with exponential backoff and jitter: 50-100, then 100-200, then 200-400 ms", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(
          MemoryUpstream.fail(unavailable()),
          MemoryUpstream.fail(unavailable()),
          MemoryUpstream.fail(unavailable()),
          MemoryUpstream.accept("api-4")
        )
        const fiber = yield* Effect.forkChild(deliver())
        yield* TestClock.adjust(0)
        assert.strictEqual(yield* sentCount, 1)
        yield* TestClock.adjust("49 millis")
        assert.strictEqual(yield* sentCount, 1)
        yield* TestClock.adjust("51 millis") // t = 100
        assert.strictEqual(yield* sentCount, 2)
        yield* TestClock.adjust("49 millis") // t = 149: the second retry comes 100-200 ms after the first
        assert.strictEqual(yield* sentCount, 2)
        yield* TestClock.adjust("151 millis") // t = 300
        assert.strictEqual(yield* sentCount, 3)
        yield* TestClock.adjust("49 millis") // t = 349
        assert.strictEqual(yield* sentCount, 3)
        yield* TestClock.adjust("351 millis") // t = 700
        const receipt = yield* Fiber.join(fiber)
        assert.strictEqual(yield* sentCount, 4)
        assert.strictEqual(receipt.accepted[0]!.upstreamId, "api-4")
      }).pipe(Effect.provide(wholeMessage({ RETRY_BASE_DELAY: "100 millis", RETRY_MAX_ATTEMPTS: "4" }))))

    it.effect("waits as long as Retry-After says when that fits inside the deadline", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(MemoryUpstream.fail(unavailable(20_000)), MemoryUpstream.accept("api-2"))
        const fiber = yield* Effect.forkChild(deliver())
        yield* TestClock.adjust("19999 millis")
        assert.strictEqual(yield* sentCount, 1)
        yield* TestClock.adjust("1 millis")
        const receipt = yield* Fiber.join(fiber)
        assert.strictEqual(yield* sentCount, 2)
        assert.strictEqual(receipt.accepted[0]!.upstreamId, "api-2")
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("answers 451 4.7.1 at once when Retry-After reaches past the deadline", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(MemoryUpstream.fail(unavailable(60_000)))
        const error = yield* Effect.flip(deliver())
        assert.strictEqual(yield* sentCount, 1)
        assert.strictEqual(error.kind, "RateLimited")
        assert.strictEqual(error.reply.toString(), Replies.rateLimited(60).toString())
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("does not start a backoff that would end after the deadline", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.fail(unavailable(), "900 millis"))
        const fiber = yield* Effect.forkChild(Effect.flip(deliver()))
        yield* TestClock.adjust("900 millis")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(yield* sentCount, 1)
        assert.strictEqual(error.kind, "Temporary")
      }).pipe(Effect.provide(wholeMessage({ DELIVERY_DEADLINE: "1000 millis", RETRY_BASE_DELAY: "500 millis" }))))

    it.effect("gives up an attempt after UPSTREAM_TIMEOUT and answers 451 4.4.1", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(MemoryUpstream.accept("late", "1 minute"))
        const fiber = yield* Effect.forkChild(Effect.flip(deliver()))
        yield* TestClock.adjust("1999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error.kind, "Timeout")
        assert.strictEqual(error.reply.toString(), Replies.upstreamTimeout.toString())
      }).pipe(Effect.provide(wholeMessage({ UPSTREAM_TIMEOUT: "2 seconds", RETRY_MAX_ATTEMPTS: "1" }))))

    it.effect("answers by DELIVERY_DEADLINE, counted from the final dot, even when attempts take longer", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.accept("late", "1 minute"))
        yield* TestClock.adjust("1 second")
        const fiber = yield* Effect.forkChild(Effect.flip(deliver(["bob@example.net", "carol@example.org"])))
        yield* TestClock.adjust("3999 millis")
        assert.isUndefined(fiber.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(fiber)
        assert.strictEqual(error.kind, "Timeout")
        assert.strictEqual(error.detail, "delivery deadline exceeded")
      }).pipe(Effect.provide(perRecipient({ DELIVERY_DEADLINE: "5 seconds", UPSTREAM_TIMEOUT: "10 seconds" }))))
  })

  describe("circuit breaker", () => {
    /** A message of its own (no Message-ID, so no window), whose final dot is now. */
    const single = (n: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (startedAt) =>
        deliver(["bob@example.net"], { messageId: null, id: `G${n}`, startedAt }))
    const gauge = Effect.map(Metric.value(circuitBreakerState), (s) => s.value)

    it.effect("opens after half of at least 10 calls failed, answers 451 4.3.0 at once, probes after 30 s and closes", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.fail(unavailable()))
        for (let n = 0; n < 9; n++) yield* Effect.flip(single(n))
        yield* Effect.yieldNow
        assert.strictEqual(yield* gauge, 0)
        yield* Effect.flip(single(9))
        yield* Effect.yieldNow
        assert.strictEqual(yield* gauge, 2)

        const rejectedFast = yield* Effect.flip(single(10))
        assert.strictEqual(yield* sentCount, 10)
        assert.strictEqual(rejectedFast.kind, "Unavailable")
        assert.strictEqual(rejectedFast.reply.toString(), Replies.upstreamTemporary.toString())

        yield* TestClock.adjust("30 seconds")
        yield* memory.answerWith(() => MemoryUpstream.accept("ok", "1 second"))
        const probe = yield* Effect.forkChild(single(11))
        yield* TestClock.adjust(0)
        assert.strictEqual(yield* gauge, 1)
        const meanwhile = yield* Effect.flip(single(12))
        assert.strictEqual(meanwhile.kind, "Unavailable")
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(probe)
        yield* Effect.yieldNow
        assert.strictEqual(yield* gauge, 0)
        yield* single(13).pipe(Effect.forkChild, Effect.tap(() => TestClock.adjust("1 second")), Effect.flatMap(Fiber.join))
        assert.strictEqual(yield* sentCount, 12)
      }).pipe(
        Effect.provide(wholeMessage({ RETRY_MAX_ATTEMPTS: "1" })),
        Effect.provideService(Metric.MetricRegistry, new Map())
      ))

    it.effect("reopens when the half-open probe fails", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.fail(unavailable()))
        for (let n = 0; n < 10; n++) yield* Effect.flip(single(n))
        yield* TestClock.adjust("30 seconds")
        yield* Effect.flip(single(10))
        yield* Effect.yieldNow
        assert.strictEqual(yield* gauge, 2)
        assert.strictEqual(yield* sentCount, 11)
        assert.strictEqual((yield* Effect.flip(single(11))).kind, "Unavailable")
      }).pipe(
        Effect.provide(wholeMessage({ RETRY_MAX_ATTEMPTS: "1" })),
        Effect.provideService(Metric.MetricRegistry, new Map())
      ))

    it.effect("is not tripped by permanent refusals", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith(() => MemoryUpstream.fail(rejected("no such mailbox")))
        for (let n = 0; n < 20; n++) yield* Effect.flip(single(n))
        const error = yield* Effect.flip(single(20))
        assert.strictEqual(error.kind, "Rejected")
        assert.strictEqual(yield* sentCount, 21)
      }).pipe(Effect.provide(perRecipient({ RETRY_MAX_ATTEMPTS: "1" }))))
  })

  describe("duplicate window", () => {
    it.effect("answers a fully delivered retry with the original gateway id, sending nothing", () =>
      Effect.gen(function*() {
        yield* deliver(["bob@example.net", "carol@example.org"], { id: "0FIRST" })
        const retry = yield* deliver(["bob@example.net", "carol@example.org"], { id: "0SECOND" })
        assert.strictEqual(yield* sentCount, 1)
        assert.strictEqual(retry.gatewayId, "0FIRST")
        assert.isTrue(retry.duplicate)
        assert.strictEqual(retry.accepted.length, 2)
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("sends a retried message only to the recipients not accepted before", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.answerWith((o) =>
          o.recipients[0] === "carol@example.org" ? MemoryUpstream.fail(unavailable()) : MemoryUpstream.accept()
        )
        const first = yield* Effect.forkChild(Effect.flip(deliver(["bob@example.net", "carol@example.org"], { id: "0FIRST" })))
        yield* TestClock.adjust("30 seconds")
        assert.strictEqual((yield* Fiber.join(first)).kind, "Temporary")
        const before = (yield* memory.sent).length
        yield* memory.answerWith(() => MemoryUpstream.accept())
        const retry = yield* deliver(["bob@example.net", "carol@example.org"], { id: "0SECOND" })
        const after = (yield* memory.sent).slice(before)
        assert.deepStrictEqual(after.map((o) => o.recipients[0]), [mailbox("carol@example.org")])
        assert.isFalse(retry.duplicate)
        assert.strictEqual(retry.skipped, 1)
        assert.strictEqual(retry.gatewayId, "0SECOND")
      }).pipe(Effect.provide(perRecipient())))

    it.effect("never takes two messages that share a Message-ID but not their bytes for one another", () =>
      Effect.gen(function*() {
        const r = request()
        yield* deliver()
        const other = yield* deliver(undefined, { id: "0OTHER", received: { ...r.received, sha256: "f".repeat(64) } })
        assert.strictEqual(yield* sentCount, 2)
        assert.isFalse(other.duplicate)
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("does not deduplicate a message without a Message-ID", () =>
      Effect.gen(function*() {
        yield* deliver(undefined, { messageId: null })
        yield* deliver(undefined, { messageId: null, id: "0OTHER" })
        assert.strictEqual(yield* sentCount, 2)
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("sends the same bytes again to other recipients", () =>
      Effect.gen(function*() {
        yield* deliver(["bob@example.net"])
        yield* deliver(["carol@example.org"], { id: "0OTHER" })
        assert.strictEqual(yield* sentCount, 2)
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("sends again once DEDUPE_WINDOW has passed", () =>
      Effect.gen(function*() {
        yield* deliver()
        yield* TestClock.adjust("10 minutes")
        yield* deliver(undefined, { id: "0LATER", startedAt: 600_000 })
        assert.strictEqual(yield* sentCount, 2)
      }).pipe(Effect.provide(wholeMessage({ DEDUPE_WINDOW: "10 minutes" }))))

    it.effect("makes a retry that arrives while the first try is in flight wait for it instead of sending", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(MemoryUpstream.accept("api-1", "2 seconds"))
        const first = yield* Effect.forkChild(deliver(undefined, { id: "0FIRST" }))
        yield* TestClock.adjust("1 second")
        const retry = yield* Effect.forkChild(deliver(undefined, { id: "0SECOND", startedAt: 1000 }))
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* Fiber.join(first)).gatewayId, "0FIRST")
        const second = yield* Fiber.join(retry)
        assert.strictEqual(yield* sentCount, 1)
        assert.isTrue(second.duplicate)
        assert.strictEqual(second.gatewayId, "0FIRST")
      }).pipe(Effect.provide(wholeMessage())))
  })

  describe("a client that leaves", () => {
    it.effect("does not cancel a delivery in flight, whose outcome a retry then gets", () =>
      Effect.gen(function*() {
        const memory = yield* MemoryUpstream
        yield* memory.enqueue(MemoryUpstream.accept("api-1", "1 second"))
        const caller = yield* Effect.forkChild(deliver(undefined, { id: "0FIRST" }))
        yield* TestClock.adjust("500 millis")
        yield* Fiber.interrupt(caller)
        yield* TestClock.adjust("500 millis")
        assert.strictEqual(yield* sentCount, 1)
        const retry = yield* deliver(undefined, { id: "0SECOND", startedAt: 1000 })
        assert.strictEqual(yield* sentCount, 1)
        assert.isTrue(retry.duplicate)
        assert.strictEqual(retry.gatewayId, "0FIRST")
      }).pipe(Effect.provide(wholeMessage())))

    it.effect("lets deliveries in flight finish before the service shuts down", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(wholeMessage(), scope)
        const memory = yield* MemoryUpstream.pipe(Effect.provide(context))
        yield* memory.enqueue(MemoryUpstream.accept("api-1", "1 second"))
        const caller = yield* Effect.forkChild(deliver().pipe(Effect.provide(context)))
        yield* TestClock.adjust(0)
        yield* Fiber.interrupt(caller)
        const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
        yield* TestClock.adjust("999 millis")
        assert.isUndefined(closing.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        yield* Fiber.join(closing)
        assert.strictEqual((yield* memory.sent).length, 1)
      }))
  })

  it.effect("runs at most ten per-recipient calls at once", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith(() => MemoryUpstream.accept(undefined, "1 second"))
      const recipients = Array.from({ length: 25 }, (_, i) => `r${i}@example.org`)
      const fiber = yield* Effect.forkChild(deliver(recipients))
      yield* TestClock.adjust(0)
      assert.strictEqual(yield* sentCount, 10)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* sentCount, 20)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* sentCount, 25)
      yield* TestClock.adjust("1 second")
      const receipt = yield* Fiber.join(fiber)
      assert.strictEqual(receipt.accepted.length, 25)
    }).pipe(Effect.provide(perRecipient())))

  it.effect("traces one delivery.submit span per upstream call under the caller's span", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.NativeSpan> = []
      const tracer = Tracer.make({
        span(options) {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const memory = yield* MemoryUpstream
      yield* memory.answerWith((o) =>
        o.recipients[0] === "carol@example.org" ? MemoryUpstream.fail(rejected("no")) : MemoryUpstream.accept("api-7")
      )
      yield* deliver(["bob@example.net", "carol@example.org"]).pipe(Effect.withSpan("smtp.data"), Effect.withTracer(tracer))

      const root = spans.find((s) => s.name === "smtp.data")
      const calls = spans.filter((s) => s.name === "delivery.submit")
      assert.sameMembers(spans.map((s) => s.name), ["smtp.data", "delivery.submit", "delivery.submit", "DeadLetter.record"])
      assert.isDefined(root)
      assert.strictEqual(calls.length, 2)
      for (const call of calls) {
        assert.strictEqual(Option.getOrUndefined(call.parent)?.spanId, root!.spanId)
        assert.strictEqual(call.attributes.get("smtp.recipient_count"), 1)
        assert.strictEqual(call.attributes.get("upstream.name"), "memory")
      }
      const statuses = calls.map((c) => [c.attributes.get("upstream.status"), c.attributes.get("upstream.id")])
      assert.sameDeepMembers(statuses, [["accepted", "api-7"], ["rejected", undefined]])
    }).pipe(Effect.provide(perRecipient())))
})

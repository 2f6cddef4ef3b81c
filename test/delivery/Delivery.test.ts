import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Tracer } from "effect"
import { TestClock } from "effect/testing"
import { Delivery, DeliveryError, idempotencyKey } from "../../src/delivery/Delivery.ts"
import { MemoryUpstream, Upstream, UpstreamError } from "../../src/delivery/Upstream.ts"
import { Replies } from "../../src/domain/Reply.ts"
import { configLayer, mailbox, request } from "./fixtures.ts"

const wholeMessage = (env: Record<string, string> = {}) =>
  Delivery.layer.pipe(Layer.provideMerge(Upstream.layerMemory), Layer.provide(configLayer(env)))
const perRecipient = (env: Record<string, string> = {}) =>
  Delivery.layer.pipe(Layer.provideMerge(Upstream.layerMemoryPerRecipient), Layer.provide(configLayer(env)))

const deliver = (recipients?: ReadonlyArray<string>) =>
  Delivery.use((delivery) => delivery.deliver(request(recipients)))

const rejected = (detail: string) => new UpstreamError({ kind: "Rejected", detail, status: 422 })

describe("Delivery", () => {
  it.effect("submits the whole message once, with every recipient, to a whole-message upstream", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.enqueue(MemoryUpstream.accept("api-1"))
      const receipt = yield* deliver(["bob@example.net", "carol@example.org"])
      const sent = yield* memory.sent
      assert.strictEqual(sent.length, 1)
      assert.deepStrictEqual<ReadonlyArray<string>>(sent[0]!.recipients, ["bob@example.net", "carol@example.org"])
      assert.strictEqual(sent[0]!.idempotencyKey, idempotencyKey(request()))
      assert.match(sent[0]!.idempotencyKey, /^[0-9a-f]{64}$/)
      assert.deepStrictEqual(receipt, {
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

  it.effect("keeps the idempotency key when the client retries the same message", () =>
    Effect.sync(() => {
      assert.strictEqual(idempotencyKey(request()), idempotencyKey(request()))
      const other = request(["bob@example.net"], {
        received: { ...request().received, sha256: "0".repeat(64) }
      })
      assert.notStrictEqual(idempotencyKey(other), idempotencyKey(request()))
    }))

  it.effect("accepts the message and names the refused recipients when only some were refused", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith((o) =>
        o.recipients[0] === "carol@example.org"
          ? MemoryUpstream.fail(rejected("mailbox unknown"))
          : MemoryUpstream.accept(`id-${o.recipients[0]}`)
      )
      const receipt = yield* deliver(["bob@example.net", "carol@example.org"])
      assert.deepStrictEqual(receipt, {
        accepted: [{ recipient: mailbox("bob@example.net"), upstreamId: "id-bob@example.net" }],
        refused: [{ recipient: mailbox("carol@example.org"), reason: "mailbox unknown" }]
      })
    }).pipe(Effect.provide(perRecipient())))

  it.effect("refuses the message, keeping the upstream's reason, when every recipient was refused", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith(() => MemoryUpstream.fail(rejected("content refused")))
      const error = yield* Effect.flip(deliver(["bob@example.net", "carol@example.org"]))
      assert.instanceOf(error, DeliveryError)
      assert.strictEqual(error.kind, "Rejected")
      assert.strictEqual(error.detail, "content refused")
      assert.deepStrictEqual(error.reply, Replies.upstreamRejected("content refused"))
    }).pipe(Effect.provide(perRecipient())))

  it.effect("maps a refusal for size to 552", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.enqueue(MemoryUpstream.fail(new UpstreamError({ kind: "TooLarge", detail: "HTTP 413", status: 413 })))
      const error = yield* Effect.flip(deliver())
      assert.strictEqual(error.kind, "TooLarge")
      assert.strictEqual(error.reply.code, 552)
    }).pipe(Effect.provide(wholeMessage())))

  it.effect("fails temporarily when any recipient failed temporarily, even if others were accepted", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith((o) =>
        o.recipients[0] === "carol@example.org"
          ? MemoryUpstream.fail(new UpstreamError({ kind: "Temporary", detail: "HTTP 429", status: 429, retryAfterMillis: 7000 }))
          : o.recipients[0] === "dave@example.org"
          ? MemoryUpstream.fail(rejected("no"))
          : MemoryUpstream.accept()
      )
      const error = yield* Effect.flip(deliver(["bob@example.net", "carol@example.org", "dave@example.org"]))
      assert.strictEqual(error.kind, "Temporary")
      assert.strictEqual(error.retryAfterMillis, 7000)
      assert.strictEqual(error.reply.toString(), Replies.upstreamTemporary.toString())
    }).pipe(Effect.provide(perRecipient())))

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
    }).pipe(Effect.provide(wholeMessage({ UPSTREAM_TIMEOUT: "2 seconds" }))))

  it.effect("stops at DELIVERY_DEADLINE even when the attempt timeout is longer", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith(() => MemoryUpstream.accept("late", "1 minute"))
      const fiber = yield* Effect.forkChild(Effect.flip(deliver(["bob@example.net", "carol@example.org"])))
      yield* TestClock.adjust("5 seconds")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error.kind, "Timeout")
      assert.strictEqual(error.detail, "delivery deadline exceeded")
    }).pipe(Effect.provide(perRecipient({ DELIVERY_DEADLINE: "5 seconds", UPSTREAM_TIMEOUT: "10 seconds" }))))

  it.effect("runs at most ten per-recipient calls at once", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryUpstream
      yield* memory.answerWith(() => MemoryUpstream.accept(undefined, "1 second"))
      const recipients = Array.from({ length: 25 }, (_, i) => `r${i}@example.org`)
      const fiber = yield* Effect.forkChild(deliver(recipients))
      yield* TestClock.adjust(0)
      assert.strictEqual((yield* memory.sent).length, 10)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* memory.sent).length, 20)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* memory.sent).length, 25)
      yield* TestClock.adjust("1 second")
      const receipt = yield* Fiber.join(fiber)
      assert.strictEqual(receipt.accepted.length, 25)
    }).pipe(Effect.provide(perRecipient())))

  it.effect("traces Delivery.deliver with one delivery.submit span per upstream call", () =>
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
      yield* deliver(["bob@example.net", "carol@example.org"]).pipe(Effect.withTracer(tracer))

      const root = spans.find((s) => s.name === "Delivery.deliver")
      const calls = spans.filter((s) => s.name === "delivery.submit")
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

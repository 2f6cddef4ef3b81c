import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Metric, Option } from "effect"
import { TestClock } from "effect/testing"
import { idempotencyKey } from "../../src/delivery/Delivery.ts"
import { maxResponseBytes } from "../../src/delivery/HttpReply.ts"
import * as HttpUpstream from "../../src/delivery/HttpUpstream.ts"
import { type Outbound, Upstream } from "../../src/delivery/Upstream.ts"
import { Principal } from "../../src/domain/Principal.ts"
import { apiErrors, apiLatency } from "../../src/observability/Metrics.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { configLayer } from "../support/TestConfig.ts"
import { alice, request } from "./fixtures.ts"

const outbound = (principal: Principal = alice): Outbound => {
  const r = request(["bob@example.net", "carol@example.org"], { principal })
  return { ...r, idempotencyKey: idempotencyKey(r, r.recipients) }
}

/** A recording server and an http upstream posting to it, for the test's scope. */
const setup = Effect.gen(function*() {
  const server = yield* RecordingHttpServer.make
  const context = yield* Layer.build(
    HttpUpstream.layer.pipe(
      Layer.provide(configLayer({ UPSTREAM: "http", UPSTREAM_URL: `${server.url}/v1/messages` })),
      Layer.provide(NodeHttpClient.layerNodeHttp)
    )
  )
  return { server, upstream: Context.get(context, Upstream) }
})

const answering = (status: number, body?: unknown, headers?: Record<string, string>) =>
  Effect.gen(function*() {
    const { server, upstream } = yield* setup
    yield* server.respondWith(() => ({ status, ...(body === undefined ? {} : { body }), ...(headers ? { headers } : {}) }))
    return yield* Effect.flip(upstream.submit(outbound()))
  })

describe("HttpUpstream", () => {
  it.effect("posts the canonical message with the bearer key, idempotency key, content type and traceparent", () =>
    Effect.gen(function*() {
      const { server, upstream } = yield* setup
      yield* server.respondWith(() => json(202, { id: "api-42" }))
      const message = outbound()
      const [accepted, span] = yield* Effect.all([upstream.submit(message), Effect.currentSpan]).pipe(
        Effect.withSpan("test.root")
      )

      assert.deepStrictEqual(accepted, { upstreamId: "api-42" })
      const [received] = yield* server.requests
      assert.isDefined(received)
      assert.strictEqual(received!.method, "POST")
      assert.strictEqual(received!.path, "/v1/messages")
      assert.strictEqual(received!.headers["authorization"], "Bearer key-alice-123")
      assert.strictEqual(received!.headers["idempotency-key"], message.idempotencyKey)
      assert.strictEqual(received!.headers["content-type"], "application/json")
      const traceparent = received!.headers["traceparent"]
      assert.isString(traceparent)
      assert.match(String(traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/)
      assert.strictEqual(String(traceparent).split("-")[1], span.traceId)
      assert.deepStrictEqual(JSON.parse(received!.body), message.message)
    }))

  it.effect("streams a message with a large attachment with its exact Content-Length, base64 on the wire", () =>
    Effect.gen(function*() {
      const { server, upstream } = yield* setup
      yield* server.respondWith(() => json(202, { id: "api-big" }))
      const content = new Uint8Array(3_000_001).map((_, i) => (i * 7) & 0xff)
      const base = outbound()
      const message = {
        ...base,
        message: {
          ...base.message,
          attachments: [{
            filename: "big.bin",
            content_type: "application/octet-stream",
            size: content.byteLength,
            content_id: null,
            disposition: "attachment" as const,
            content_base64: content
          }]
        }
      }
      assert.deepStrictEqual(yield* upstream.submit(message), { upstreamId: "api-big" })
      const [received] = yield* server.requests
      assert.strictEqual(received!.headers["content-length"], String(Buffer.byteLength(received!.body)))
      assert.isUndefined(received!.headers["transfer-encoding"])
      const body = JSON.parse(received!.body)
      assert.isTrue(Buffer.from(body.attachments[0].content_base64, "base64").equals(content))
      assert.deepStrictEqual({ ...body, attachments: [] }, { ...message.message, attachments: [] })
    }))

  it.effect("sends no Authorization header when the principal has no API key", () =>
    Effect.gen(function*() {
      const { server, upstream } = yield* setup
      yield* upstream.submit(outbound(new Principal({ ...alice, apiKey: Option.none() })))
      const [received] = yield* server.requests
      assert.isUndefined(received!.headers["authorization"])
    }))

  it.effect("takes a 2xx without an id as accepted, with upstream id \"unknown\"", () =>
    Effect.gen(function*() {
      const { server, upstream } = yield* setup
      yield* server.respondWith(() => ({ status: 200, body: "OK" }))
      assert.deepStrictEqual(yield* upstream.submit(outbound()), { upstreamId: "unknown" })
      yield* server.respondWith(() => json(201, { id: 17 }))
      assert.deepStrictEqual(yield* upstream.submit(outbound()), { upstreamId: "17" })
    }))

  it.effect("maps 400 to a permanent refusal carrying the API's detail", () =>
    Effect.gen(function*() {
      const error = yield* answering(400, { detail: "invalid sender domain" })
      assert.strictEqual(error.kind, "Rejected")
      assert.strictEqual(error.detail, "invalid sender domain")
      assert.strictEqual(error.status, 400)
    }))

  it.effect("keeps a 422 reason to one line of at most 200 characters", () =>
    Effect.gen(function*() {
      const error = yield* answering(422, { message: `line one\r\nline two ${"x".repeat(400)}` })
      assert.strictEqual(error.kind, "Rejected")
      assert.isTrue(error.detail.startsWith("line one line two xxx"))
      assert.strictEqual(error.detail.length, 200)
      assert.notMatch(error.detail, /[\r\n]/)
    }))

  it.effect("says \"HTTP <status>\" when a refusal has no readable reason", () =>
    Effect.gen(function*() {
      const error = yield* answering(400, "<html>bad request</html>")
      assert.strictEqual(error.detail, "HTTP 400")
    }))

  it.effect("maps 401 and 403 to Unauthorized", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* answering(401, { error: "bad key" })).kind, "Unauthorized")
      assert.strictEqual((yield* answering(403)).kind, "Unauthorized")
    }))

  it.effect("maps 413 to TooLarge", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* answering(413)).kind, "TooLarge")
    }))

  it.effect("maps 429 to a temporary failure with Retry-After in seconds", () =>
    Effect.gen(function*() {
      const error = yield* answering(429, { error: "slow down" }, { "retry-after": "30" })
      assert.strictEqual(error.kind, "Temporary")
      assert.strictEqual(error.retryAfterMillis, 30_000)
    }))

  it.effect("maps 503 to a temporary failure with Retry-After as an HTTP date, measured on the Clock", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.parse("2026-03-01T12:00:00Z"))
      const error = yield* answering(503, undefined, { "retry-after": "Sun, 01 Mar 2026 12:02:00 GMT" })
      assert.strictEqual(error.kind, "Temporary")
      assert.strictEqual(error.retryAfterMillis, 120_000)
    }))

  it.effect("maps 500 without Retry-After to a temporary failure", () =>
    Effect.gen(function*() {
      const error = yield* answering(500, "oops")
      assert.strictEqual(error.kind, "Temporary")
      assert.isUndefined(error.retryAfterMillis)
      assert.strictEqual(error.detail, "HTTP 500")
    }))

  it.effect("fails temporarily when the connection is refused", () =>
    Effect.gen(function*() {
      const closed = yield* Effect.scoped(RecordingHttpServer.make)
      const context = yield* Layer.build(
        HttpUpstream.layer.pipe(
          Layer.provide(configLayer({ UPSTREAM: "http", UPSTREAM_URL: `${closed.url}/v1/messages` })),
          Layer.provide(NodeHttpClient.layerNodeHttp)
        )
      )
      const error = yield* Effect.flip(Context.get(context, Upstream).submit(outbound()))
      assert.strictEqual(error.kind, "Temporary")
      assert.strictEqual(error.detail, "the email API could not be reached")
    }))

  it.effect("reads a large answer only up to its cap", () =>
    Effect.gen(function*() {
      const error = yield* answering(400, { detail: "y".repeat(2 * maxResponseBytes) })
      // the JSON is cut at the cap, so no reason can be read from it
      assert.strictEqual(error.detail, "HTTP 400")
    }))

  it.effect("counts failed calls by type and times every call", () =>
    Effect.gen(function*() {
      yield* answering(422, { detail: "no" })
      yield* answering(503)
      const rejected = yield* Metric.value(Metric.withAttributes(apiErrors, { type: "rejected" }))
      const temporary = yield* Metric.value(Metric.withAttributes(apiErrors, { type: "temporary" }))
      const latency = yield* Metric.value(apiLatency)
      assert.strictEqual(rejected.count, 1)
      assert.strictEqual(temporary.count, 1)
      assert.strictEqual(latency.count, 2)
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map())))
})

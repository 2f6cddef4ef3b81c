import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, layer } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Metric } from "effect"
import { HttpClient } from "effect/http"
import { AdminHttp } from "../../src/admin/AdminHttp.ts"
import { Readiness } from "../../src/admin/Readiness.ts"
import { GatewayConfig } from "../../src/Config.ts"
import { emailsReceived } from "../../src/observability/Metrics.ts"

const config = GatewayConfig.layer.pipe(
  Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { HTTP_HOST: "127.0.0.1", HTTP_PORT: "0" } })))
)

const AdminTest = AdminHttp.layer.pipe(
  Layer.provideMerge(Readiness.layer),
  Layer.provide(config),
  Layer.merge(NodeHttpClient.layerNodeHttp)
)

const get = (path: string) =>
  Effect.gen(function*() {
    const { port } = yield* AdminHttp
    const response = yield* (yield* HttpClient.HttpClient).get(`http://127.0.0.1:${port}${path}`)
    return { status: response.status, contentType: response.headers["content-type"], body: yield* response.text }
  })

describe("AdminHttp", () => {
  layer(AdminTest, { excludeTestServices: true })("on an ephemeral port", (it) => {
    it.effect("listens on the port the system chose", () =>
      Effect.gen(function*() {
        const { port } = yield* AdminHttp
        assert.isAbove(port, 0)
      }))

    it.effect("answers /health/live with 200 and status ok", () =>
      Effect.gen(function*() {
        const live = yield* get("/health/live")
        assert.strictEqual(live.status, 200)
        assert.deepStrictEqual(JSON.parse(live.body), { status: "ok" })
      }))

    it.effect("answers /health/ready with 503 until the gateway is ready, then 200, then 503 while draining", () =>
      Effect.gen(function*() {
        const readiness = yield* Readiness
        const starting = yield* get("/health/ready")
        assert.strictEqual(starting.status, 503)
        assert.deepStrictEqual(JSON.parse(starting.body), { status: "starting" })

        yield* readiness.set("ready")
        const ready = yield* get("/health/ready")
        assert.strictEqual(ready.status, 200)
        assert.deepStrictEqual(JSON.parse(ready.body), { status: "ready" })

        yield* readiness.set("draining")
        const draining = yield* get("/health/ready")
        assert.strictEqual(draining.status, 503)
        assert.deepStrictEqual(JSON.parse(draining.body), { status: "draining" })
      }))

    it.effect("serves the gateway's counters as Prometheus text on /metrics", () =>
      Effect.gen(function*() {
        yield* Metric.update(emailsReceived, 3)
        const metrics = yield* get("/metrics")
        assert.strictEqual(metrics.status, 200)
        assert.match(metrics.contentType ?? "", /^text\/plain; version=0\.0\.4/)
        assert.include(metrics.body, "# TYPE smtp_emails_received_total counter")
        assert.match(metrics.body, /^smtp_emails_received_total 3$/m)
      }))

    it.effect("answers an unknown path with 404", () =>
      Effect.gen(function*() {
        assert.strictEqual((yield* get("/nope")).status, 404)
      }))
  })
})

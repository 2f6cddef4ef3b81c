/**
 * The admin HTTP server (design.md §6) on HTTP_HOST:HTTP_PORT: liveness, readiness and Prometheus
 * metrics. It logs one line when it listens and nothing per request; it changes no gateway state
 * (session listing and drain, which need ADMIN_TOKEN, join `routes` later).
 */
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServer, type HttpServerError, HttpServerResponse } from "effect/http"
import { NetAddress } from "effect/net"
import { PrometheusMetrics } from "effect/observability"
import { GatewayConfig } from "../Config.ts"
import { Readiness } from "./Readiness.ts"

/** Every admin endpoint, as router layers. */
export const routes = Layer.mergeAll(
  HttpRouter.add("GET", "/health/live", HttpServerResponse.jsonUnsafe({ status: "ok" })),
  HttpRouter.add(
    "GET",
    "/health/ready",
    Effect.gen(function*() {
      const state = yield* (yield* Readiness).get
      return HttpServerResponse.jsonUnsafe({ status: state }, { status: state === "ready" ? 200 : 503 })
    })
  ),
  PrometheusMetrics.layerHttp({ path: "/metrics" })
)

export class AdminHttp extends Context.Service<AdminHttp, {
  /** The port it listens on (the one chosen by the system when HTTP_PORT is 0). */
  readonly port: number
}>()("smtp-gateway/admin/AdminHttp") {
  /** Listens while the layer is alive; closing the layer stops the server. */
  static readonly layer: Layer.Layer<AdminHttp, HttpServerError.ServeError, GatewayConfig | Readiness> = Layer.unwrap(
    Effect.gen(function*() {
      const { http } = yield* GatewayConfig
      const bound = Layer.effect(
        AdminHttp,
        Effect.gen(function*() {
          const { address } = yield* HttpServer.HttpServer
          const port = NetAddress.isInetAddress(address) ? address.port : 0
          yield* Effect.logInfo("admin HTTP listening").pipe(Effect.annotateLogs({ host: http.host, port }))
          return AdminHttp.of({ port })
        })
      )
      return Layer.mergeAll(bound, HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true })).pipe(
        Layer.provide(NodeHttpServer.layer(() => createServer(), { host: http.host, port: http.port }))
      )
    })
  )
}

/**
 * The admin HTTP server (design.md §6) on HTTP_HOST:HTTP_PORT: liveness, readiness, Prometheus metrics,
 * the open sessions, and two write operations (disconnect a session, drain) that need
 * `Authorization: Bearer <ADMIN_TOKEN>` and are disabled when ADMIN_TOKEN is unset. It logs one line
 * when it listens and one per write operation; the SMTP work itself is the listener's.
 */
import * as crypto from "node:crypto"
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { HttpRouter, HttpServer, type HttpServerError, HttpServerRequest, HttpServerResponse } from "effect/http"
import { NetAddress } from "effect/net"
import { PrometheusMetrics } from "effect/observability"
import { GatewayConfig } from "../Config.ts"
import { Readiness } from "./Readiness.ts"
import { SessionControl, type SessionTarget } from "./SessionControl.ts"

const sha256 = (text: string) => crypto.createHash("sha256").update(text, "utf8").digest()

/** Constant time: both sides are hashed to 32 bytes first, so neither the content nor the length leaks. */
export const tokenMatches = (given: string, expected: string): boolean =>
  crypto.timingSafeEqual(sha256(given), sha256(expected))

const problem = (status: number, error: string, headers?: Record<string, string>) =>
  HttpServerResponse.jsonUnsafe({ error }, { status, ...(headers === undefined ? {} : { headers }) })

/**
 * `None` when the request carries the admin token; otherwise the refusal: 403 when no ADMIN_TOKEN is
 * set (write operations disabled) or the token is wrong, 401 when there is no bearer token at all.
 */
const authorize = Effect.gen(function*() {
  const { adminToken } = yield* GatewayConfig
  if (Option.isNone(adminToken)) {
    return Option.some(problem(403, "admin write operations are disabled: set ADMIN_TOKEN to enable them"))
  }
  const request = yield* HttpServerRequest.HttpServerRequest
  const bearer = /^Bearer +(\S+) *$/i.exec(request.headers["authorization"] ?? "")
  if (bearer === null) {
    return Option.some(problem(401, "send Authorization: Bearer <ADMIN_TOKEN>", { "www-authenticate": "Bearer" }))
  }
  if (!tokenMatches(bearer[1]!, Redacted.value(adminToken.value))) return Option.some(problem(403, "wrong admin token"))
  return Option.none()
})

/** Runs `f` with the listener, or answers 503 while the SMTP listener is not up yet. */
const withSessions = <E, R>(
  f: (target: SessionTarget) => Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
) =>
  Effect.gen(function*() {
    const target = yield* (yield* SessionControl).target
    return yield* Option.match(target, {
      onNone: () => Effect.succeed(problem(503, "the SMTP listener is not running")),
      onSome: f
    })
  })

/** A write operation: authorized first, then `f`. */
const guarded = <E, R>(f: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  Effect.flatMap(authorize, Option.match({ onNone: () => f, onSome: Effect.succeed }))

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
  PrometheusMetrics.layerHttp({ path: "/metrics" }),
  HttpRouter.add(
    "GET",
    "/sessions",
    withSessions((target) => Effect.map(target.sessions, (sessions) => HttpServerResponse.jsonUnsafe({ sessions })))
  ),
  HttpRouter.add(
    "DELETE",
    "/sessions/:id",
    guarded(withSessions((target) =>
      Effect.gen(function*() {
        const id = (yield* HttpRouter.params).id ?? ""
        if (!(yield* target.disconnect(id))) return problem(404, "no such session")
        yield* Effect.logInfo("session disconnected by the admin API").pipe(Effect.annotateLogs({ session_id: id }))
        return HttpServerResponse.jsonUnsafe({ id, disconnected: true })
      })
    ))
  ),
  HttpRouter.add(
    "POST",
    "/drain",
    guarded(withSessions((target) =>
      Effect.gen(function*() {
        yield* Effect.logInfo("drain requested by the admin API")
        const report = yield* target.drain
        return HttpServerResponse.jsonUnsafe({ status: "drained", ...report })
      })
    ))
  )
)

export class AdminHttp extends Context.Service<AdminHttp, {
  /** The port it listens on (the one chosen by the system when HTTP_PORT is 0). */
  readonly port: number
}>()("smtp-gateway/admin/AdminHttp") {
  /** Listens while the layer is alive; closing the layer stops the server. */
  static readonly layer: Layer.Layer<
    AdminHttp,
    HttpServerError.ServeError,
    GatewayConfig | Readiness | SessionControl
  > = Layer.unwrap(
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

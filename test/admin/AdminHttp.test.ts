import * as net from "node:net"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer, Metric, References, Schedule } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { AdminHttp, tokenMatches } from "../../src/admin/AdminHttp.ts"
import { Readiness } from "../../src/admin/Readiness.ts"
import { SessionControl, type SessionTarget } from "../../src/admin/SessionControl.ts"
import { emailsReceived } from "../../src/observability/Metrics.ts"
import type { SessionSnapshot } from "../../src/smtp/Session.ts"
import { connect } from "../support/SmtpClient.ts"
import { configLayer } from "../support/TestConfig.ts"
import { alice, startGateway } from "../support/TestGateway.ts"

const token = "admin-token-0f9e8d7c6b5a"

const adminLayer = (env: Record<string, string>) =>
  AdminHttp.layer.pipe(
    Layer.provideMerge(Layer.merge(Readiness.layer, SessionControl.layer)),
    Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error")),
    Layer.provide(configLayer({ HTTP_HOST: "127.0.0.1", HTTP_PORT: "0", ...env })),
    Layer.merge(NodeHttpClient.layerNodeHttp)
  )

interface Answer {
  readonly status: number
  readonly contentType: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

const call = (port: number, method: "GET" | "POST" | "DELETE", path: string, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const response = yield* (yield* HttpClient.HttpClient).execute(
      HttpClientRequest.make(method)(`http://127.0.0.1:${port}${path}`).pipe(HttpClientRequest.setHeaders(headers))
    )
    return {
      status: response.status,
      contentType: response.headers["content-type"],
      headers: response.headers,
      body: yield* response.text
    } satisfies Answer
  })

const get = (path: string) =>
  Effect.gen(function*() {
    const { port } = yield* AdminHttp
    return yield* call(port, "GET", path)
  })
const bearer = (value: string) => ({ authorization: `Bearer ${value}` })

const snapshot: SessionSnapshot = {
  id: "s1",
  peer: "127.0.0.1:40000",
  tls: "TLSv1.3",
  user: "alice",
  state: "data",
  bytes: 1234,
  age: 3,
  command: "DATA"
}

/** A stand-in for the listener that records what the admin API asked of it. */
const recordingTarget = () => {
  const calls: Array<string> = []
  const target: SessionTarget = {
    sessions: Effect.succeed([snapshot]),
    disconnect: (id) => Effect.sync(() => (calls.push(`disconnect ${id}`), id === "s1")),
    drain: Effect.sync(() => (calls.push("drain"), { sessions: 1, idle: 1, finished: 0, forced: 0 }))
  }
  return { calls, target }
}

describe("AdminHttp", () => {
  layer(adminLayer({}), { excludeTestServices: true })("on an ephemeral port", (it) => {
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

    it.effect("refuses both write operations with 403 when no ADMIN_TOKEN is set, whatever the request carries", () =>
      Effect.gen(function*() {
        const { calls, target } = recordingTarget()
        yield* (yield* SessionControl).attach(target)
        const { port } = yield* AdminHttp
        for (const headers of [{}, bearer(token), bearer("")]) {
          const drain = yield* call(port, "POST", "/drain", headers)
          assert.strictEqual(drain.status, 403)
          assert.include(JSON.parse(drain.body).error, "ADMIN_TOKEN")
          assert.strictEqual((yield* call(port, "DELETE", "/sessions/s1", headers)).status, 403)
        }
        assert.deepStrictEqual(calls, [])
        // reading the sessions needs no token
        assert.strictEqual((yield* get("/sessions")).status, 200)
      }))
  })

  layer(adminLayer({ ADMIN_TOKEN: token }), { excludeTestServices: true })("with ADMIN_TOKEN set", (it) => {
    it.effect("answers the session endpoints with 503 until the SMTP listener is attached", () =>
      Effect.gen(function*() {
        const { port } = yield* AdminHttp
        assert.strictEqual((yield* get("/sessions")).status, 503)
        assert.strictEqual((yield* call(port, "POST", "/drain", bearer(token))).status, 503)
      }))

    it.effect("refuses a write without a bearer token with 401, and a wrong token with 403, doing nothing", () =>
      Effect.gen(function*() {
        const { calls, target } = recordingTarget()
        yield* (yield* SessionControl).attach(target)
        const { port } = yield* AdminHttp
        const missing = yield* call(port, "POST", "/drain")
        assert.strictEqual(missing.status, 401)
        assert.strictEqual(missing.headers["www-authenticate"], "Bearer")
        assert.strictEqual((yield* call(port, "POST", "/drain", { authorization: `Basic ${token}` })).status, 401)
        assert.strictEqual((yield* call(port, "POST", "/drain", bearer(`${token}x`))).status, 403)
        assert.strictEqual((yield* call(port, "POST", "/drain", bearer(token.slice(0, -1)))).status, 403)
        assert.strictEqual((yield* call(port, "DELETE", "/sessions/s1", bearer("wrong"))).status, 403)
        assert.deepStrictEqual(calls, [])
      }))

    it.effect("lists the sessions, disconnects one and drains with the right token", () =>
      Effect.gen(function*() {
        const { calls, target } = recordingTarget()
        yield* (yield* SessionControl).attach(target)
        const { port } = yield* AdminHttp
        const listed = yield* get("/sessions")
        assert.strictEqual(listed.status, 200)
        assert.deepStrictEqual(JSON.parse(listed.body), { sessions: [snapshot] })

        const deleted = yield* call(port, "DELETE", "/sessions/s1", bearer(token))
        assert.strictEqual(deleted.status, 200)
        assert.deepStrictEqual(JSON.parse(deleted.body), { id: "s1", disconnected: true })
        assert.strictEqual((yield* call(port, "DELETE", "/sessions/nobody", bearer(token))).status, 404)

        const drained = yield* call(port, "POST", "/drain", bearer(token))
        assert.strictEqual(drained.status, 200)
        assert.deepStrictEqual(JSON.parse(drained.body), { status: "drained", sessions: 1, idle: 1, finished: 0, forced: 0 })
        assert.deepStrictEqual(calls, ["disconnect s1", "disconnect nobody", "drain"])
      }))
  })

  it("compares tokens by content, whatever their length", () => {
    assert.isTrue(tokenMatches(token, token))
    assert.isFalse(tokenMatches(token, `${token} `))
    assert.isFalse(tokenMatches("", token))
    assert.isFalse(tokenMatches(token.toUpperCase(), token))
  })
})

const plain = Buffer.from(`\0${alice.username}\0${alice.password}`).toString("base64")

describe("AdminHttp with the gateway", () => {
  it.live("shows a live session, ends it with 421 4.3.2 on DELETE, then drains and refuses new connections", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({ ADMIN_TOKEN: token, SHUTDOWN_DRAIN_TIMEOUT: "5 seconds" })
      const admin = (method: "GET" | "POST" | "DELETE", path: string) =>
        call(gateway.httpPort, method, path, method === "GET" ? {} : bearer(token)).pipe(
          Effect.provide(NodeHttpClient.layerNodeHttp)
        )

      // one client authenticated over TLS, in a transaction; one idle right after the greeting
      const busy = yield* connect({ port: gateway.smtpPort })
      yield* busy.readReply
      yield* busy.sendLine("EHLO busy.example")
      yield* busy.readReply
      yield* busy.sendLine("STARTTLS")
      yield* busy.readReply
      yield* busy.startTls
      yield* busy.sendLine("EHLO busy.example")
      yield* busy.readReply
      yield* busy.sendLine(`AUTH PLAIN ${plain}`)
      assert.strictEqual((yield* busy.readReply).code, 235)
      yield* busy.sendLine("MAIL FROM:<alice@example.com>")
      assert.strictEqual((yield* busy.readReply).code, 250)
      const idle = yield* connect({ port: gateway.smtpPort })
      yield* idle.readReply

      const listed = yield* admin("GET", "/sessions")
      assert.strictEqual(listed.status, 200)
      const sessions = (JSON.parse(listed.body) as { sessions: Array<SessionSnapshot> }).sessions
      assert.strictEqual(sessions.length, 2)
      const authenticated = sessions.find((s) => s.user !== null)!
      assert.strictEqual(authenticated.user, alice.username)
      assert.match(authenticated.tls ?? "", /^TLSv1\.[23]$/)
      assert.strictEqual(authenticated.state, "transaction")
      assert.strictEqual(authenticated.command, "MAIL")
      assert.strictEqual(authenticated.bytes, 0)
      assert.isAtLeast(authenticated.age, 0)
      assert.match(authenticated.peer, /^127\.0\.0\.1:\d+$/)
      const other = sessions.find((s) => s.user === null)!
      assert.deepInclude(other, { tls: null, state: "connected", command: null })

      const deleted = yield* admin("DELETE", `/sessions/${encodeURIComponent(authenticated.id)}`)
      assert.strictEqual(deleted.status, 200)
      assert.strictEqual((yield* busy.readReply).last, "421 4.3.2 Service shutting down")
      yield* busy.awaitClose
      yield* admin("GET", "/sessions").pipe(
        Effect.filterOrFail((answer) => JSON.parse(answer.body).sessions.length === 1),
        Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo({ times: 200 })))
      )

      const drained = yield* admin("POST", "/drain")
      assert.strictEqual(drained.status, 200)
      assert.deepStrictEqual(JSON.parse(drained.body), { status: "drained", sessions: 1, idle: 1, finished: 0, forced: 0 })
      assert.strictEqual((yield* idle.readReply).last, "421 4.3.2 Service shutting down")
      assert.strictEqual((yield* admin("GET", "/health/ready")).status, 503)
      assert.deepStrictEqual(JSON.parse((yield* admin("GET", "/sessions")).body), { sessions: [] })
      const refused = yield* Effect.callback<string>((resume) => {
        const socket = net.connect({ host: "127.0.0.1", port: gateway.smtpPort })
        socket.once("error", (error: Error & { code?: string }) => resume(Effect.succeed(error.code ?? "error")))
        socket.once("connect", () => {
          socket.destroy()
          resume(Effect.succeed("connected"))
        })
      })
      assert.strictEqual(refused, "ECONNREFUSED")
      // a second drain reports the same
      assert.deepStrictEqual(JSON.parse((yield* admin("POST", "/drain")).body), JSON.parse(drained.body))
    }))
})

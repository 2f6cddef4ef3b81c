/**
 * Graceful shutdown of a real gateway process on SIGTERM (design.md §6): readiness 503 at once, new
 * connections refused, a transaction in DATA and one awaiting a slow email API finish with their real
 * reply, an idle session gets `421 4.3.2`, traces are flushed, and the process exits 0.
 */
import * as net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import { connect, type SmtpClient } from "../support/SmtpClient.ts"
import { parseLogLine, spawnGateway } from "../support/GatewayProcess.ts"
import { OtlpCollector } from "../support/OtlpCollector.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { alice } from "../support/TestGateway.ts"

const plain = Buffer.from(`\0${alice.username}\0${alice.password}`).toString("base64")

/** Greeting, EHLO, STARTTLS, EHLO, AUTH PLAIN as alice. */
const authenticated = (port: number) =>
  Effect.gen(function*() {
    const client = yield* connect({ port, timeout: "20 seconds" })
    yield* client.readReply
    yield* client.sendLine("EHLO client.example")
    yield* client.readReply
    yield* client.sendLine("STARTTLS")
    yield* client.readReply
    yield* client.startTls
    yield* client.sendLine("EHLO client.example")
    yield* client.readReply
    yield* client.sendLine(`AUTH PLAIN ${plain}`)
    assert.strictEqual((yield* client.readReply).code, 235)
    return client
  })

/** MAIL, RCPT, DATA up to the 354. */
const startData = (client: SmtpClient) =>
  Effect.gen(function*() {
    yield* client.sendLine("MAIL FROM:<alice@example.com>")
    assert.strictEqual((yield* client.readReply).code, 250)
    yield* client.sendLine("RCPT TO:<bob@example.net>")
    assert.strictEqual((yield* client.readReply).code, 250)
    yield* client.sendLine("DATA")
    assert.strictEqual((yield* client.readReply).code, 354)
  })

const header = (subject: string) =>
  `From: alice@example.com\r\nTo: bob@example.net\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@example.com>\r\n\r\n`

const httpStatus = (port: number, path: string) =>
  Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`).then((r) => r.status))

const connectOutcome = (port: number) =>
  Effect.callback<string>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("error", (error: Error & { code?: string }) => resume(Effect.succeed(error.code ?? "error")))
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed("connected"))
    })
  })

describe("Shutdown", () => {
  it.live("on SIGTERM finishes the transactions in flight, says 421 4.3.2 to the idle, flushes traces and exits 0", () =>
    Effect.gen(function*() {
      const collector = yield* OtlpCollector.make
      const api = yield* RecordingHttpServer.make
      yield* api.respondWith((request) =>
        request.body.includes("slow-one") ? { ...json(202, { id: "api-slow" }), delayMillis: 1500 } : json(202, { id: "api-fast" })
      )
      const gateway = yield* spawnGateway({
        UPSTREAM: "http",
        UPSTREAM_URL: `${api.url}/messages`,
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        SHUTDOWN_DRAIN_TIMEOUT: "15 seconds"
      })
      assert.strictEqual(yield* httpStatus(gateway.httpPort, "/health/ready"), 200)

      const idle = yield* authenticated(gateway.smtpPort)
      const midData = yield* authenticated(gateway.smtpPort)
      yield* startData(midData)
      yield* midData.write(header("mid-data") + "first half of the body\r\n")
      const slow = yield* authenticated(gateway.smtpPort)
      yield* startData(slow)
      yield* slow.write(header("slow-one") + "waiting for the API\r\n.\r\n")
      const slowReply = yield* Effect.forkChild(slow.readReply)
      // the slow message has reached the API, which takes 1.5 s to answer
      yield* api.requests.pipe(
        Effect.filterOrFail((requests) => requests.length === 1),
        Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo({ times: 200 })))
      )

      yield* gateway.kill("SIGTERM")
      yield* httpStatus(gateway.httpPort, "/health/ready").pipe(
        Effect.filterOrFail((status) => status === 503),
        Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo({ times: 100 })))
      )
      assert.isUndefined(slowReply.pollUnsafe(), "readiness is 503 while the slow transaction still waits")

      assert.strictEqual((yield* idle.readReply).last, "421 4.3.2 Service shutting down")
      yield* idle.awaitClose
      assert.strictEqual(yield* connectOutcome(gateway.smtpPort), "ECONNREFUSED")

      // the client in DATA finishes its message and gets the real reply, then 421
      yield* midData.write("second half\r\n.\r\n")
      assert.match((yield* midData.readReply).last, /^250 2\.0\.0 Ok: queued as /)
      assert.strictEqual((yield* midData.readReply).last, "421 4.3.2 Service shutting down")

      assert.match((yield* Fiber.join(slowReply)).last, /^250 2\.0\.0 Ok: queued as /)
      assert.strictEqual((yield* slow.readReply).last, "421 4.3.2 Service shutting down")

      assert.strictEqual(yield* gateway.exitCode(), 0)
      assert.strictEqual((yield* api.requests).length, 2)

      const stopped = (yield* gateway.stdout).map(parseLogLine).find((line) => line?.message === "SMTP stopped")
      assert.deepInclude(stopped, { sessions: 3, idle: 1, finished: 2, forced: 0 })

      const spans = yield* collector.spans
      assert.strictEqual(spans.filter((s) => s.name === "smtp.session").length, 3, "every session span was flushed")
      const slowSubmit = spans.find((s) => s.name === "delivery.submit" && s.attributes["upstream.id"] === "api-slow")
      assert.isDefined(slowSubmit, "the slow delivery's span was flushed")
    }), { timeout: 60_000 })
})

import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { converse, startTls } from "../support/converse.ts"
import { FakeCakemail } from "../support/FakeCakemail.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { type CollectedSpan, OtlpCollector } from "../support/OtlpCollector.ts"
import { startGateway } from "../support/TestGateway.ts"

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString("base64")

/** The W3C traceparent header: version, trace id, parent span id, flags. */
const traceparent = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/

const only = (spans: ReadonlyArray<CollectedSpan>, name: string): CollectedSpan => {
  const found = spans.filter((s) => s.name === name)
  assert.strictEqual(found.length, 1, `one span named ${name}, got ${found.length}`)
  return found[0]!
}

/** True when `ancestor` is `span` itself or one of its parents. */
const descendsFrom = (spans: ReadonlyArray<CollectedSpan>, span: CollectedSpan, ancestor: CollectedSpan): boolean => {
  let current: CollectedSpan | undefined = span
  while (current !== undefined) {
    if (current.spanId === ancestor.spanId) return true
    const parentId: string = current.parentSpanId
    current = spans.find((s) => s.spanId === parentId)
  }
  return false
}

describe("Tracing", () => {
  it.live("exports one trace per session over OTLP/HTTP: the SMTP commands, the parse and one delivery.submit per recipient", () =>
    Effect.gen(function*() {
      const collector = yield* OtlpCollector.make
      const fake = yield* FakeCakemail.make()
      const gatewayScope = yield* Scope.make()
      const gateway = yield* startGateway({
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        OTEL_SERVICE_NAME: "smtp-gateway-test",
        AUTH_BACKEND: "cakemail",
        UPSTREAM: "cakemail",
        CAKEMAIL_API_URL: fake.url
      }).pipe(Scope.provide(gatewayScope))

      yield* converse(
        `${startTls()}
        C: AUTH PLAIN ${plain("alice@example.test", "alice-secret")}
        S: 235 2.7.0 *
        C: MAIL FROM:<alice@example.test>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: RCPT TO:<carol@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: Alice <alice@example.test>
        C: To: bob@example.net, carol@example.net
        C: Subject: traced
        C: Message-ID: <traced-1@example.test>
        C:
        C: Hello both.
        C: .
        S: 250 2.0.0 Ok: queued as *
        C: QUIT
        S: 221 *
      `,
        { port: gateway.smtpPort }
      )
      // closing the gateway ends the session span and flushes the exporter
      yield* Scope.close(gatewayScope, Exit.void)
      const spans = yield* collector.awaitSpans((all) => all.some((s) => s.name === "smtp.session"))

      const session = only(spans, "smtp.session")
      assert.strictEqual(session.parentSpanId, "", "smtp.session is a root span")
      assert.strictEqual(session.serviceName, "smtp-gateway-test")
      const trace = spans.filter((s) => s.traceId === session.traceId)
      assert.strictEqual(session.attributes["client.address"], "127.0.0.1")
      assert.strictEqual(session.attributes["smtp.helo"], "client.example")
      assert.match(String(session.attributes["tls.protocol"]), /^TLSv1\.[23]$/)
      assert.isString(session.attributes["tls.cipher"])
      assert.strictEqual(session.attributes["smtp.auth.mechanism"], "PLAIN")
      assert.strictEqual(session.attributes["smtp.auth.user"], "alice@example.test")

      const auth = only(trace, "smtp.auth")
      assert.strictEqual(auth.parentSpanId, session.spanId)
      assert.strictEqual(auth.attributes["smtp.auth.mechanism"], "PLAIN")
      assert.strictEqual(auth.attributes["smtp.auth.outcome"], "success")
      assert.strictEqual(auth.attributes["smtp.reply.code"], 235)

      const mail = only(trace, "smtp.mail")
      assert.strictEqual(mail.parentSpanId, session.spanId)
      assert.strictEqual(mail.attributes["smtp.reply.code"], 250)
      const rcpts = trace.filter((s) => s.name === "smtp.rcpt")
      assert.strictEqual(rcpts.length, 2)
      for (const rcpt of rcpts) assert.strictEqual(rcpt.parentSpanId, session.spanId)

      const data = only(trace, "smtp.data")
      assert.strictEqual(data.parentSpanId, session.spanId)
      assert.strictEqual(data.attributes["smtp.recipient_count"], 2)
      assert.isAbove(Number(data.attributes["smtp.message_size"]), 50)
      assert.strictEqual(data.attributes["smtp.reply.code"], 250)
      assert.match(String(data.attributes["smtp.gateway_id"]), /^[0-9A-Z]{19}$/)

      const parse = only(trace, "message.parse")
      assert.isTrue(descendsFrom(trace, parse, data), "message.parse is under smtp.data")
      const submits = trace.filter((s) => s.name === "delivery.submit")
      assert.strictEqual(submits.length, 2, "one delivery.submit per recipient")
      const upstreamIds = new Set<unknown>()
      for (const submit of submits) {
        assert.isTrue(descendsFrom(trace, submit, data), "delivery.submit is under smtp.data")
        assert.strictEqual(submit.attributes["upstream.name"], "cakemail")
        assert.strictEqual(submit.attributes["upstream.status"], "accepted")
        upstreamIds.add(submit.attributes["upstream.id"])
      }
      assert.strictEqual(upstreamIds.size, 2, "each recipient's upstream id is on its span")

      // every call to the API carried the session's trace
      const calls = yield* fake.requests
      assert.isAbove(calls.length, 2)
      for (const call of calls) {
        const match = traceparent.exec(call.headers["traceparent"] ?? "")
        assert.isNotNull(match, `traceparent on ${call.method} ${call.path}`)
        assert.strictEqual(match![1], session.traceId, `${call.method} ${call.path} is in the session's trace`)
        const client = trace.find((s) => s.spanId === match![2])
        assert.isDefined(client, `the parent of ${call.method} ${call.path} was exported`)
      }
      const emails = calls.filter((c) => c.path === "/v2/emails")
      assert.strictEqual(emails.length, 2)
      const token = calls.find((c) => c.path === "/token")!
      const tokenParent = trace.find((s) => s.spanId === traceparent.exec(token.headers["traceparent"]!)![2])!
      assert.isTrue(descendsFrom(trace, tokenParent, auth), "the token exchange is under smtp.auth")
    }))

  it.live("propagates traceparent to the generic auth API and email API, and exports no secret", () =>
    Effect.gen(function*() {
      const collector = yield* OtlpCollector.make
      const api = yield* RecordingHttpServer.make
      const apiKey = "key-from-the-auth-api-5f1c"
      yield* api.respondWith((request) =>
        request.path === "/auth"
          ? json(200, { api_key: apiKey, senders: ["@example.com"] })
          : json(202, { id: "upstream-77" })
      )
      const gatewayScope = yield* Scope.make()
      const gateway = yield* startGateway({
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        AUTH_BACKEND: "http",
        AUTH_URL: `${api.url}/auth`,
        UPSTREAM: "http",
        UPSTREAM_URL: `${api.url}/messages`
      }).pipe(Scope.provide(gatewayScope))
      const password = "pw-of-the-traced-user-93a"
      const body = "the-body-text-7d2e is private"
      yield* converse(
        `${startTls()}
        C: AUTH PLAIN ${plain("dora@example.com", password)}
        S: 235 2.7.0 *
        C: MAIL FROM:<dora@example.com>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: RCPT TO:<carol@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: dora@example.com
        C: To: bob@example.net, carol@example.net
        C: Subject: generic
        C: Message-ID: <traced-2@example.com>
        C:
        C: ${body}
        C: .
        S: 250 2.0.0 *
      `,
        { port: gateway.smtpPort }
      )
      yield* Scope.close(gatewayScope, Exit.void)
      const spans = yield* collector.awaitSpans((all) => all.some((s) => s.name === "smtp.session"))
      const session = only(spans, "smtp.session")
      const submit = only(spans, "delivery.submit")
      assert.strictEqual(submit.traceId, session.traceId)
      assert.strictEqual(submit.attributes["upstream.id"], "upstream-77")
      assert.strictEqual(submit.attributes["smtp.recipient_count"], 2)

      const calls = yield* api.requests
      assert.deepStrictEqual(calls.map((c) => c.path), ["/auth", "/messages"])
      for (const call of calls) {
        const match = traceparent.exec(String(call.headers["traceparent"] ?? ""))
        assert.isNotNull(match, `traceparent on ${call.path}`)
        assert.strictEqual(match![1], session.traceId)
      }
      const exported = (yield* collector.bodies).join("\n")
      for (const secret of [password, apiKey, body, plain("dora@example.com", password)]) {
        assert.notInclude(exported, secret)
      }
    }))
})

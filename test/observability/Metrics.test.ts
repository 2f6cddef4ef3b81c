import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { converse, startTls } from "../support/converse.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { alice, startGateway } from "../support/TestGateway.ts"

const plain = (user: string, password: string) => Buffer.from(`\0${user}\0${password}`).toString("base64")

/** Every sample of a Prometheus text exposition: name, labels, value. */
const samples = (text: string) =>
  text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => {
    const match = /^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.isNotNull(match, `a Prometheus sample: ${line}`)
    const labels = Object.fromEntries(
      Array.from(match![2]?.matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g) ?? [], (m) => [m[1]!, m[2]!])
    )
    return { name: match![1]!, labels, value: Number(match![3]) }
  })

type Sample = ReturnType<typeof samples>[number]

const value = (all: ReadonlyArray<Sample>, name: string, labels: Record<string, string> = {}) => {
  const found = all.filter((s) =>
    s.name === name && Object.keys(labels).length === Object.keys(s.labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )
  assert.strictEqual(found.length, 1, `one sample ${name} ${JSON.stringify(labels)}`)
  return found[0]!.value
}

const session = (body: string) => `${startTls()}
  ${body}
  C: QUIT
  S: 221 *
`

const message = (subject: string) => `
  C: MAIL FROM:<alice@example.com>
  S: 250 *
  C: RCPT TO:<bob@example.net>
  S: 250 *
  C: RCPT TO:<carol@example.net>
  S: 250 *
  C: DATA
  S: 354 *
  C: From: alice@example.com
  C: To: bob@example.net
  C: Subject: ${subject}
  C: Message-ID: <${subject}@example.com>
  C:
  C: body of ${subject}
  C: .
`

describe("Metrics", () => {
  it.live("counts known sessions on /metrics, by bounded labels only", () =>
    Effect.gen(function*() {
      const api = yield* RecordingHttpServer.make
      yield* api.respondWith((request) =>
        request.body.includes("second") ? json(503, { detail: "busy" }) : json(202, { id: "api-1" })
      )
      const gateway = yield* startGateway({ UPSTREAM: "http", UPSTREAM_URL: `${api.url}/send`, RETRY_MAX_ATTEMPTS: "1" })
      const port = gateway.smtpPort

      // 1: delivered, then refused by a temporary API failure
      yield* converse(
        session(`
          C: AUTH PLAIN ${plain(alice.username, alice.password)}
          S: 235 *
          ${message("first")}
          S: 250 2.0.0 *
          ${message("second")}
          S: 451 4.3.0 *
        `),
        { port }
      )
      // 2: a wrong password
      yield* converse(
        session(`
          C: AUTH PLAIN ${plain(alice.username, "not-the-password")}
          S: 535 5.7.8 *
        `),
        { port }
      )
      // 3: connects and leaves
      yield* converse("S: 220 *\nC: QUIT\nS: 221 *", { port })

      const scrape = Effect.promise(() => fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`).then((r) => r.text()))
      // the last session's close is counted once the server has seen the socket end
      const text = yield* scrape.pipe(
        Effect.filterOrFail((t) => /^smtp_connection_duration_seconds_count 3$/m.test(t)),
        Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo({ times: 100 })))
      )
      const all = samples(text)

      for (
        const name of [
          "smtp_connections_total",
          "smtp_active_connections",
          "smtp_emails_received_total",
          "smtp_emails_forwarded_total",
          "smtp_auth_failures_total",
          "smtp_api_errors_total",
          "smtp_processing_duration_seconds",
          "smtp_api_latency_seconds",
          "smtp_connection_duration_seconds",
          "smtp_api_key_cache_size"
        ]
      ) {
        assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, "m"), `${name} is exposed`)
        assert.match(text, new RegExp(`^# HELP ${name} \\S`, "m"), `${name} has a description`)
      }

      assert.strictEqual(value(all, "smtp_connections_total", { result: "accepted" }), 3)
      assert.strictEqual(value(all, "smtp_active_connections"), 0)
      assert.strictEqual(value(all, "smtp_connection_duration_seconds_count"), 3)
      assert.strictEqual(value(all, "smtp_emails_received_total"), 2)
      assert.strictEqual(value(all, "smtp_emails_forwarded_total", { result: "accepted" }), 1)
      assert.strictEqual(value(all, "smtp_emails_forwarded_total", { result: "temporary_failure" }), 1)
      assert.strictEqual(value(all, "smtp_auth_failures_total", { reason: "invalid_credentials" }), 1)
      assert.strictEqual(value(all, "smtp_api_errors_total", { type: "temporary" }), 1)
      assert.strictEqual(value(all, "smtp_api_latency_seconds_count"), 2)
      assert.strictEqual(value(all, "smtp_processing_duration_seconds_count"), 2, "every message processed is timed, refused ones too")
      // alice's good credentials and the refused ones (kept briefly so a retry storm stays cheap)
      assert.strictEqual(value(all, "smtp_api_key_cache_size"), 2)

      // histogram buckets span SMTP and API latencies: milliseconds to tens of seconds
      const bounds = all.filter((s) => s.name === "smtp_api_latency_seconds_bucket").map((s) => s.labels.le)
      for (const le of ["0.005", "0.1", "1", "10", "30", "+Inf"]) assert.include(bounds, le)
      assert.strictEqual(value(all, "smtp_api_latency_seconds_bucket", { le: "+Inf" }), 2)

      // no label carries a user, an address, a host or an IP
      const labelValues = all.flatMap((s) => Object.entries(s.labels).filter(([k]) => k !== "le").map(([, v]) => v))
      for (const v of labelValues) {
        assert.match(v, /^[a-z_]+$/, `label value "${v}" is an enumeration`)
        assert.notInclude(v, "alice")
      }
      assert.notInclude(text, "127.0.0.1")
      assert.notInclude(text, "example.")
    }))
})

/**
 * The logs of a real gateway process (stdout, LOG_LEVEL=trace, LOG_FORMAT=json) over full sessions:
 * one JSON object per line with the fields operators filter on, and no secret in any line.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { converse, startTls } from "../support/converse.ts"
import { parseLogLine, spawnGateway } from "../support/GatewayProcess.ts"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { alice } from "../support/TestGateway.ts"

const b64 = (text: string) => Buffer.from(text).toString("base64")
const plain = (user: string, password: string) => b64(`\0${user}\0${password}`)

const wrongPassword = "Wr0ng-Pa55word-71bf"
const adminToken = "admin-token-c0ffee-4242"
const bodySecret = "body-secret-9a8b7c"

const start = startTls()

const transaction = `
  C: MAIL FROM:<alice@example.com>
  S: 250 *
  C: RCPT TO:<bob@example.net>
  S: 250 *
  C: DATA
  S: 354 *
  C: From: alice@example.com
  C: To: bob@example.net
  C: Subject: quarterly numbers
  C: Message-ID: <logs-1@example.com>
  C:
  C: password=${bodySecret}
  C: Authorization: Bearer ${bodySecret}
  C: .
  S: 250 2.0.0 *
`

describe("Process logs", () => {
  it.live("are JSON lines with session and trace ids, and never carry a password, AUTH payload, token or body", () =>
    Effect.gen(function*() {
      const api = yield* RecordingHttpServer.make
      yield* api.respondWith(() => json(202, { id: "api-logs-1" }))
      const gateway = yield* spawnGateway({
        LOG_LEVEL: "trace",
        LOG_FORMAT: "json",
        UPSTREAM: "http",
        UPSTREAM_URL: `${api.url}/send`,
        ADMIN_TOKEN: adminToken
      })
      const port = gateway.smtpPort

      // success with AUTH PLAIN and a message whose body looks like secrets
      yield* converse(`${start}
        C: AUTH PLAIN ${plain(alice.username, alice.password)}
        S: 235 *
        ${transaction}
        C: QUIT
        S: 221 *`, { port })
      // a bad password
      yield* converse(`${start}
        C: AUTH PLAIN ${plain(alice.username, wrongPassword)}
        S: 535 5.7.8 *
        C: QUIT
        S: 221 *`, { port })
      // AUTH LOGIN, wrong then right
      yield* converse(`${start}
        C: AUTH LOGIN
        S: 334 *
        C: ${b64(alice.username)}
        S: 334 *
        C: ${b64(wrongPassword)}
        S: 535 5.7.8 *
        C: AUTH LOGIN ${b64(alice.username)}
        S: 334 *
        C: ${b64(alice.password)}
        S: 235 *
        C: QUIT
        S: 221 *`, { port })
      // the admin API, with a wrong and a right token
      for (const token of ["not-the-admin-token", adminToken]) {
        yield* Effect.promise(() =>
          fetch(`http://127.0.0.1:${gateway.httpPort}/sessions/none`, {
            method: "DELETE",
            headers: { authorization: `Bearer ${token}` }
          })
        )
      }
      assert.strictEqual((yield* api.requests)[0]?.headers.authorization, `Bearer ${alice.apiKey}`)

      yield* gateway.kill("SIGTERM")
      assert.strictEqual(yield* gateway.exitCode(), 0)
      const lines = (yield* gateway.stdout).filter((line) => line !== "")

      // one JSON object per line, each with time, level and message
      for (const line of lines) {
        const fields = parseLogLine(line)
        assert.isDefined(fields, `a JSON line: ${line}`)
        assert.match(String(fields!.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
        assert.include(["trace", "debug", "info", "warn", "error", "fatal"], fields!.level)
        assert.isString(fields!.message)
      }
      const entries = lines.map((line) => parseLogLine(line)!)
      const opened = entries.filter((e) => e.message === "connection opened")
      assert.strictEqual(opened.length, 3)
      for (const entry of opened) {
        assert.match(String(entry.session_id), /\S/)
        assert.match(String(entry.trace_id), /^[0-9a-f]{32}$/)
        assert.match(String(entry.span_id), /^[0-9a-f]{16}$/)
      }
      const accepted = entries.find((e) => e.message === "message accepted")
      assert.isDefined(accepted)
      assert.strictEqual(accepted!.session_id, opened[0]!.session_id, "a transaction's lines carry its session id")
      assert.strictEqual(accepted!.trace_id, opened[0]!.trace_id, "and its trace id")
      assert.isAtLeast(entries.filter((e) => e.message === "authentication failed").length, 2)

      const everything = (yield* gateway.stdout).join("\n") + (yield* gateway.stderr)
      const secrets = {
        "alice's password": alice.password,
        "the wrong password": wrongPassword,
        "the PLAIN payload": plain(alice.username, alice.password),
        "the wrong PLAIN payload": plain(alice.username, wrongPassword),
        "the LOGIN password": b64(alice.password),
        "the wrong LOGIN password": b64(wrongPassword),
        "the API key": alice.apiKey,
        "the admin token": adminToken,
        "the body": bodySecret
      }
      for (const [what, secret] of Object.entries(secrets)) {
        assert.notInclude(everything, secret, `${what} is not in the output`)
      }
    }), { timeout: 60_000 })
})

import * as fs from "node:fs"
import * as path from "node:path"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Redacted } from "effect"
import { load, outboxProbe, replay, type ReplayTarget } from "../../src/capture/Replay.ts"
import type { CanonicalMessage } from "../../src/domain/Message.ts"
import { alice, startGateway, type TestGatewayHandle } from "../support/TestGateway.ts"
import { corpusEnv, sessionFiles, sessionsDir } from "./corpus.ts"

/** The real gateway, configured as the corpus was recorded. */
class CorpusGateway extends Context.Service<CorpusGateway, TestGatewayHandle>()("test/capture/CorpusGateway") {
  static readonly layer = Layer.effect(CorpusGateway, startGateway(corpusEnv))
}

const targetOf = (gateway: TestGatewayHandle): ReplayTarget<CanonicalMessage> => ({
  port: gateway.smtpPort,
  credentials: { username: alice.username, password: Redacted.make(alice.password) },
  upstream: outboxProbe(gateway.outboxDir)
})

const mismatchOf = <A, E>(exit: Exit.Exit<A, E>) => Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined

layer(CorpusGateway.layer, { excludeTestServices: true })("Replay of the captured corpus", (it) => {
  it("has the corpus the issue asks for", () => {
    assert.includeMembers([...sessionFiles()], [
      "nodemailer-plain.smtp",
      "nodemailer-html-attachments.smtp",
      "smtplib-auth-login-initial-response.smtp",
      "swaks-auth-plain-pipelining.smtp",
      "dotnet-auth-login-without-initial-response.smtp",
      "rset-between-transactions.smtp",
      "disconnect-mid-data.smtp",
      "rejected-sender.smtp",
      "oversize-message.smtp"
    ])
  })

  for (const file of sessionFiles()) {
    it.effect(`replays ${file} as captured, and the upstream gets one message per 250`, () =>
      Effect.gen(function*() {
        const gateway = yield* CorpusGateway
        const transcript = yield* load(path.join(sessionsDir, file))
        const result = yield* replay(transcript, targetOf(gateway))
        const accepted = result.replies.filter((r) => /^250 2\.0\.0 Ok: queued as /.test(r.last)).length
        assert.strictEqual(result.upstream.length, accepted)
        assert.isTrue(transcript.header.some((h) => h.startsWith("proves: ")), "each file says what it proves")
      }))
  }

  it.effect("returns the upstream request a replay caused, so a test can assert on it", () =>
    Effect.gen(function*() {
      // a gateway of its own: the shared one already has this message in its duplicate window
      const gateway = yield* startGateway(corpusEnv)
      const result = yield* replay(yield* load(path.join(sessionsDir, "nodemailer-html-attachments.smtp")), targetOf(gateway))
      assert.strictEqual(result.upstream.length, 1)
      const message = result.upstream[0]!
      assert.strictEqual(message.subject, "Report with attachments")
      assert.deepStrictEqual(message.envelope.rcpt_to, ["bob@example.net", "carol@example.net"])
      assert.deepStrictEqual(message.attachments.map((a) => `${a.filename} ${a.disposition} ${a.size}`).sort(), [
        "data.csv attachment 20",
        "logo.png inline 1500",
        "report.pdf attachment 6000"
      ])
    }))

  it.effect("fails a changed reply with a readable diff of the first difference", () =>
    Effect.gen(function*() {
      const gateway = yield* CorpusGateway
      const text = fs.readFileSync(path.join(sessionsDir, "rejected-sender.smtp"), "utf8")
        .replace("S: 550 5.7.1 Sender address not allowed for this account", "S: 550 5.7.1 Sender refused")
      const error = mismatchOf(yield* Effect.exit(replay(text, targetOf(gateway))))
      assert.strictEqual(error?._tag, "ConversationMismatch")
      if (error?._tag !== "ConversationMismatch") return
      assert.strictEqual(error.expected, "550 5.7.1 Sender refused")
      assert.strictEqual(error.got, "550 5.7.1 Sender address not allowed for this account")
      assert.include(
        error.diff,
        [
          "  S: 235 2.7.0 Authentication successful",
          "  C: MAIL FROM:<ceo@bank.example>",
          "- S: 550 5.7.1 Sender refused",
          "+ S: 550 5.7.1 Sender address not allowed for this account"
        ].join("\n")
      )
    }))

  it.effect("asks for credentials when a capture has redacted AUTH payloads", () =>
    Effect.gen(function*() {
      const gateway = yield* CorpusGateway
      const exit = yield* Effect.exit(replay(yield* load(path.join(sessionsDir, "nodemailer-plain.smtp")), { port: gateway.smtpPort }))
      const error = mismatchOf(exit)
      assert.strictEqual(error?._tag, "CredentialsNeeded")
    }))

  it.effect("replays a body kept only as its digest with a stand-in of the same size", () =>
    Effect.gen(function*() {
      const gateway = yield* CorpusGateway
      const result = yield* replay(`
        S: 220 *
        C: EHLO digest.test
        S: 250 *
        C: STARTTLS
        S: 220 *
        -- tls
        C: EHLO digest.test
        S: 250 *
        C: AUTH PLAIN <redacted>
        S: 235 *
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.net>
        C: DATA
        S: 250 *
        S: 250 *
        S: 354 *
        -- body 2000 bytes sha256:${"0".repeat(64)}
        C: .
        S: 250 2.0.0 Ok: queued as *
        C: QUIT
        S: 221 *
        -- server closed
      `, targetOf(gateway))
      assert.strictEqual(result.upstream.length, 1)
      assert.strictEqual(result.upstream[0]!.subject, "Stand-in for a captured body")
      assert.isTrue(result.tls)
    }))

  it.effect("replays a failed login as a failed login", () =>
    Effect.gen(function*() {
      const gateway = yield* CorpusGateway
      yield* replay(`
        S: 220 *
        C: EHLO wrong.test
        S: 250 *
        C: STARTTLS
        S: 220 *
        C: EHLO wrong.test
        S: 250 *
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: <redacted-invalid>
        S: 334 UGFzc3dvcmQ6
        C: <redacted-invalid>
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH LOGIN <redacted>
        S: 334 UGFzc3dvcmQ6
        C: <redacted>
        S: 235 2.7.0 Authentication successful
      `, targetOf(gateway))
    }))

  it.effect("says when the server does not close the connection the capture says it closed", () =>
    Effect.gen(function*() {
      const gateway = yield* CorpusGateway
      const exit = yield* Effect.exit(replay(`
        S: 220 *
        C: NOOP
        S: 250 *
        -- server closed
      `, { port: gateway.smtpPort, timeout: "300 millis" }))
      const error = mismatchOf(exit)
      assert.strictEqual(error?._tag, "ConversationMismatch")
      assert.include(error?.message ?? "", `expected "-- server closed" but got "<the server kept the connection open>"`)
    }))
})

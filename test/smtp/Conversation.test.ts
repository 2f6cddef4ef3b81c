import * as crypto from "node:crypto"
import * as tls from "node:tls"
import { assert, describe, it, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Scope, Tracer } from "effect"
import { Readiness } from "../../src/admin/Readiness.ts"
import type { GatewayConfigShape } from "../../src/Config.ts"
import { SmtpListener } from "../../src/smtp/Listener.ts"
import { converse, startTls } from "../support/converse.ts"
import { connect, type SmtpClient } from "../support/SmtpClient.ts"
import type { TestEnv } from "../support/TestConfig.ts"
import { b64, testConfig as harnessConfig, listenerLayer, plain, Seen } from "./harness.ts"

// ---- test configuration -------------------------------------------------------------------------

/** The harness's configuration with limits small enough to reach in a script. */
const testConfig = (env: TestEnv = {}) =>
  harnessConfig({
    AUTH_FAILURE_LIMIT: "1000", // lockouts have their own tests (Hardening.test.ts); here alice must stay welcome
    MAX_MESSAGE_SIZE: "10000",
    MAX_RECIPIENTS: "3",
    MAX_CONNECTIONS_PER_IP: "10",
    RATE_LIMIT_PER_IP: "100",
    RATE_LIMIT_PER_USER: "600",
    SHUTDOWN_DRAIN_TIMEOUT: "5 seconds",
    ...env
  })

/** Greeting, EHLO, STARTTLS, EHLO: a secured session that has not authenticated yet. */
const secured = startTls("client.test")

/** Greeting, EHLO, STARTTLS, EHLO, AUTH PLAIN as alice: the preamble of most scripts. */
const loggedIn = `
  S: 220 mx.test ESMTP ready
  C: EHLO client.test
  S: 250 *
  C: STARTTLS
  S: 220 *
  C: EHLO client.test
  S: 250 *
  C: AUTH PLAIN ${plain("alice", "secret")}
  S: 235 2.7.0 Authentication successful
`

/** The same preamble over a raw client. */
const logIn = (client: SmtpClient) =>
  Effect.gen(function*() {
    assert.strictEqual((yield* client.readReply).code, 220)
    yield* client.sendLine("EHLO client.test")
    yield* client.readReply
    yield* client.sendLine("STARTTLS")
    assert.strictEqual((yield* client.readReply).code, 220)
    yield* client.startTls
    yield* client.sendLine("EHLO client.test")
    yield* client.readReply
    yield* client.sendLine(`AUTH PLAIN ${plain("alice", "secret")}`)
    assert.strictEqual((yield* client.readReply).last, "235 2.7.0 Authentication successful")
  })

// ---- conversations against one shared listener ---------------------------------------------------

layer(listenerLayer(testConfig({ SMTPS_PORT: "0" })), { excludeTestServices: true })(
  "SMTP conversations",
  (it) => {
    const run = (script: string) => Effect.flatMap(SmtpListener, ({ port }) => converse(script, { port }))

    it.effect("greets with the configured host name", () =>
      run(`
        S: 220 mx.test ESMTP ready
        C: QUIT
        S: 221 2.0.0 Bye
      `))

    it.effect("advertises AUTH only after STARTTLS, and STARTTLS only before", () =>
      run(`
        S: 220 mx.test ESMTP ready
        C: EHLO client.test
        S: 250-mx.test Nice to meet you, *
        S: 250-PIPELINING
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-STARTTLS
        S: 250 SIZE 10000
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: EHLO client.test
        S: 250-mx.test Nice to meet you, *
        S: 250-PIPELINING
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-AUTH PLAIN LOGIN
        S: 250 SIZE 10000
      `).pipe(Effect.map((result) => assert.isTrue(result.tls))))

    it.effect("refuses AUTH before STARTTLS", () =>
      run(`
        S: 220 *
        C: EHLO client.test
        S: 250 *
        C: AUTH PLAIN ${plain("alice", "secret")}
        S: 530 5.7.0 Must issue a STARTTLS command first
      `))

    it.effect("refuses bad credentials, and empty ones without asking the Authenticator", () =>
      Effect.gen(function*() {
        const recorder = yield* Seen
        const before = recorder.verified.length
        // three failures per connection at most: the third is answered 421 and closes it
        yield* run(`${secured}
          C: AUTH PLAIN ${plain("alice", "wrong")}
          S: 535 5.7.8 Authentication credentials invalid
          C: AUTH PLAIN ${plain("alice", "")}
          S: 535 5.7.8 Authentication credentials invalid
          C: AUTH PLAIN ${plain("", "secret", "alice")}
          S: 421 4.7.0 Too many failed authentication attempts, try again later
        `)
        yield* run(`${secured}
          C: AUTH PLAIN ${plain("alice", "secret", "bob")}
          S: 535 5.7.8 Authentication credentials invalid
          C: AUTH LOGIN ${b64("alice")}
          S: 334 UGFzc3dvcmQ6
          C:
          S: 535 5.7.8 Authentication credentials invalid
        `)
        assert.deepStrictEqual(recorder.verified.slice(before), ["alice"])
      }))

    it.effect("accepts AUTH LOGIN with an initial response (Python smtplib) and without (.NET)", () =>
      Effect.gen(function*() {
        yield* run(`${secured}
          C: AUTH LOGIN ${b64("alice")}
          S: 334 UGFzc3dvcmQ6
          C: ${b64("secret")}
          S: 235 2.7.0 Authentication successful
        `)
        yield* run(`${secured}
          C: AUTH LOGIN
          S: 334 VXNlcm5hbWU6
          C: ${b64("alice")}
          S: 334 UGFzc3dvcmQ6
          C: ${b64("secret")}
          S: 235 2.7.0 Authentication successful
        `)
      }))

    it.effect("requires AUTH before MAIL", () =>
      run(`${secured}
        C: MAIL FROM:<alice@example.test>
        S: 530 5.7.0 Authentication required
      `))

    it.effect("refuses a sender the account may not use, and bad address syntax", () =>
      run(`${loggedIn}
        C: MAIL FROM:<mallory@example.test>
        S: 550 5.7.1 Sender address not allowed for this account
        C: MAIL FROM:<not an address>
        S: 501 5.1.3 Bad address syntax
        C: MAIL FROM:<alice@localhost>
        S: 501 5.1.3 Bad address syntax
        C: MAIL FROM:<alice@example.test>
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<bob@localhost>
        S: 550 5.1.2 Local domains are not accepted as recipients
        C: RCPT TO:<bob@example.net>
        S: 250 2.1.5 Recipient ok
      `))

    it.effect("refuses recipients over MAX_RECIPIENTS", () =>
      run(`${loggedIn}
        C: MAIL FROM:<alice@example.test>
        S: 250 *
        C: RCPT TO:<a@example.net>
        S: 250 *
        C: RCPT TO:<b@example.net>
        S: 250 *
        C: RCPT TO:<c@example.net>
        S: 250 *
        C: RCPT TO:<d@example.net>
        S: 452 4.5.3 Too many recipients
      `))

    it.effect("refuses a declared SIZE over the limit at MAIL", () =>
      run(`${loggedIn}
        C: MAIL FROM:<alice@example.test> SIZE=20000
        S: 552 5.3.4 Message size exceeds the limit of 10000 bytes
        C: MAIL FROM:<alice@example.test> SIZE=2000 BODY=8BITMIME SMTPUTF8
        S: 250 2.1.0 Sender ok
      `))

    it.effect("submits a message: envelope, exact bytes and their SHA-256 reach Submission", () =>
      Effect.gen(function*() {
        const recorder = yield* Seen
        const result = yield* run(`${loggedIn}
          C: MAIL FROM:<alice@example.test> BODY=8BITMIME
          S: 250 2.1.0 Sender ok
          C: RCPT TO:<bob@example.net>
          S: 250 2.1.5 Recipient ok
          C: RCPT TO:<Carol@Example.net>
          S: 250 2.1.5 Recipient ok
          C: DATA
          S: 354 *
          C: Subject: hi
          C:
          C: hello
          C: ..dot-stuffed
          C: .
          S: 250 2.0.0 Ok: queued as TEST*
          C: QUIT
          S: 221 2.0.0 Bye
        `)
        const last = recorder.submissions[recorder.submissions.length - 1]!
        const expected = Buffer.from("Subject: hi\r\n\r\nhello\r\n.dot-stuffed\r\n")
        assert.strictEqual(last.envelope.mailFrom, "alice@example.test")
        assert.deepStrictEqual([...last.envelope.rcptTo], ["bob@example.net", "Carol@Example.net"])
        assert.strictEqual(last.envelope.bodyType, "8BITMIME")
        assert.strictEqual(last.principal.username, "alice")
        assert.strictEqual(last.session.helo, "client.test")
        assert.isTrue(Option.isSome(last.session.tls))
        assert.strictEqual(Buffer.from(last.message.raw).toString("latin1"), expected.toString("latin1"))
        assert.strictEqual(last.message.size, expected.length)
        assert.strictEqual(last.message.sha256, crypto.createHash("sha256").update(expected).digest("hex"))
        assert.strictEqual(
          result.replies.find((r) => r.code === 250 && r.last.includes("queued"))?.last,
          `250 2.0.0 Ok: queued as TEST${recorder.submissions.length}`
        )
      }))

    it.effect("starts a new transaction after RSET", () =>
      Effect.gen(function*() {
        const recorder = yield* Seen
        yield* run(`${loggedIn}
          C: MAIL FROM:<alice@example.test>
          S: 250 *
          C: RCPT TO:<first@example.net>
          S: 250 *
          C: RSET
          S: 250 *
          C: MAIL FROM:<alice@example.test>
          S: 250 *
          C: RCPT TO:<second@example.net>
          S: 250 *
          C: DATA
          S: 354 *
          C: Subject: two
          C:
          C: .
          S: 250 2.0.0 *
          C: MAIL FROM:<alice@example.test>
          S: 250 *
          C: RCPT TO:<third@example.net>
          S: 250 *
          C: DATA
          S: 354 *
          C: Subject: three
          C:
          C: .
          S: 250 2.0.0 *
        `)
        const [second, third] = recorder.submissions.slice(-2)
        assert.deepStrictEqual([...second!.envelope.rcptTo], ["second@example.net"])
        assert.deepStrictEqual([...third!.envelope.rcptTo], ["third@example.net"])
      }))

    it.effect("answers pipelined commands sent in one write, in order", () =>
      run(`${loggedIn}
        C: MAIL FROM:<alice@example.test>
        C: RCPT TO:<bob@example.net>
        C: RCPT TO:<mallory@localhost>
        C: RCPT TO:<carol@example.net>
        C: DATA
        S: 250 2.1.0 Sender ok
        S: 250 2.1.5 Recipient ok
        S: 550 5.1.2 Local domains are not accepted as recipients
        S: 250 2.1.5 Recipient ok
        S: 354 *
        C: Subject: pipelined
        C:
        C: body
        C: .
        C: QUIT
        S: 250 2.0.0 Ok: queued as *
        S: 221 2.0.0 Bye
      `))

    it.effect("answers a defect in a hook with 451 4.3.0 and keeps the connection usable", () =>
      run(`${secured}
        C: AUTH PLAIN ${plain("crash", "secret")}
        S: 451 4.3.0 Internal error, try again later
        C: AUTH PLAIN ${plain("alice", "secret")}
        S: 235 2.7.0 Authentication successful
        C: NOOP
        S: 250 *
      `))

    it.effect("refuses a streamed body over the limit with 552, delivers nothing, and goes on", () =>
      Effect.gen(function*() {
        const { port } = yield* SmtpListener
        const recorder = yield* Seen
        const before = recorder.submissions.length
        const client = yield* connect({ port })
        yield* logIn(client)
        yield* client.write("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
        assert.strictEqual((yield* client.readReply).code, 250)
        assert.strictEqual((yield* client.readReply).code, 250)
        assert.strictEqual((yield* client.readReply).code, 354)
        const line = "x".repeat(998) + "\r\n"
        for (let i = 0; i < 200; i++) yield* client.write(line.repeat(10)) // 2 MB against a 10 kB limit
        yield* client.write(".\r\n")
        assert.strictEqual((yield* client.readReply).last, "552 5.3.4 Message size exceeds the limit of 10000 bytes")
        assert.strictEqual(recorder.submissions.length, before)
        yield* client.sendLine("MAIL FROM:<alice@example.test>")
        assert.strictEqual((yield* client.readReply).last, "250 2.1.0 Sender ok")
      }))

    it.effect("refuses a command sent before the greeting", () =>
      Effect.gen(function*() {
        const { port } = yield* SmtpListener
        const client = yield* connect({ port })
        yield* client.sendLine("EHLO early.test")
        const reply = yield* client.readReply
        assert.strictEqual(reply.last, "421 4.7.0 Command sent before the greeting, closing connection")
        yield* client.awaitClose
      }))

    it.effect("greets within a few milliseconds", () =>
      Effect.gen(function*() {
        const { port } = yield* SmtpListener
        const client = yield* connect({ port })
        const [elapsed] = yield* Effect.timed(client.readReply)
        assert.isBelow(Duration.toMillis(elapsed), 80)
      }))

    it.effect("speaks implicit TLS on the SMTPS port", () =>
      Effect.gen(function*() {
        const { smtpsPort } = yield* SmtpListener
        assert.isTrue(Option.isSome(smtpsPort))
        const result = yield* converse(
          `
          S: 220 mx.test ESMTP ready
          C: EHLO client.test
          S: 250-mx.test *
          S: 250-PIPELINING
          S: 250-8BITMIME
          S: 250-SMTPUTF8
          S: 250-ENHANCEDSTATUSCODES
          S: 250-AUTH PLAIN LOGIN
          S: 250 SIZE 10000
          C: AUTH PLAIN ${plain("alice", "secret")}
          S: 235 2.7.0 Authentication successful
          C: MAIL FROM:<alice@example.test>
          S: 250 2.1.0 Sender ok
          `,
          { port: Option.getOrThrow(smtpsPort), implicitTls: true }
        )
        assert.isTrue(result.tls)
      }))

    it.effect("lists open sessions", () =>
      Effect.gen(function*() {
        const listener = yield* SmtpListener
        const client = yield* connect({ port: listener.port })
        yield* logIn(client)
        const sessions = yield* listener.sessions
        const mine = sessions.find((s) => s.user === "alice" && s.tls !== null)
        assert.isDefined(mine)
        assert.strictEqual(mine!.state, "authenticated")
      }))

    it.effect("fails a script with the line, the expectation and what came", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(run(`
          S: 220 mx.test ESMTP ready
          C: NOOP
          S: 250 2.0.0 Not what it says
        `))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
        assert.strictEqual(error?._tag, "ConversationMismatch")
        assert.include(error?.message ?? "", "script line 4: expected \"250 2.0.0 Not what it says\" but got \"250 2.0.0 OK\"")
      }))
  }
)

// ---- a listener of its own per test: timeouts and shutdown ---------------------------------------

describe("SMTP listener lifecycle", () => {
  /** Builds the gateway in a scope the test closes itself. */
  const start = (config: GatewayConfigShape, extra: Layer.Layer<never> = Layer.empty) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(listenerLayer(config).pipe(Layer.provide(extra)), scope)
      return {
        scope,
        listener: Context.get(context, SmtpListener),
        readiness: Context.get(context, Readiness),
        recorder: Context.get(context, Seen)
      }
    })

  it.live("closes an idle connection after IDLE_TIMEOUT with 421 4.4.2", () =>
    Effect.gen(function*() {
      const { listener, scope } = yield* start(testConfig({ IDLE_TIMEOUT: "300 millis" }))
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      assert.strictEqual((yield* client.readReply).last, "421 4.4.2 Idle timeout, closing connection")
      yield* client.awaitClose
      yield* Scope.close(scope, Exit.void)
    }))

  it.live("on shutdown, tells an idle client 421 4.3.2 and stops accepting", () =>
    Effect.gen(function*() {
      const { listener, readiness, scope } = yield* start(testConfig())
      assert.strictEqual(yield* readiness.get, "ready")
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      yield* client.sendLine("EHLO client.test")
      yield* client.readReply
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      assert.strictEqual((yield* client.readReply).last, "421 4.3.2 Service shutting down")
      yield* client.awaitClose
      yield* Fiber.join(closing)
      assert.strictEqual(yield* readiness.get, "draining")
      const refused = yield* Effect.exit(connect({ port: listener.port }).pipe(Effect.flatMap((c) => c.readReply)))
      assert.isTrue(Exit.isFailure(refused))
    }))

  it.live("on shutdown, lets a delivery in flight finish, then says 421 4.3.2", () =>
    Effect.gen(function*() {
      const { listener, recorder, scope } = yield* start(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* logIn(client)
      yield* client.write(
        "MAIL FROM:<alice@example.test>\r\nRCPT TO:<slow@example.net>\r\nDATA\r\nSubject: slow\r\n\r\nbody\r\n.\r\n"
      )
      for (const code of [250, 250, 354]) assert.strictEqual((yield* client.readReply).code, code)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      assert.match((yield* client.readReply).last, /^250 2\.0\.0 Ok: queued as TEST1$/)
      assert.strictEqual((yield* client.readReply).last, "421 4.3.2 Service shutting down")
      yield* Fiber.join(closing)
      assert.strictEqual(recorder.submissions.length, 1)
    }))

  it.live("on shutdown, cuts a delivery still running at SHUTDOWN_DRAIN_TIMEOUT with 421 4.3.2", () =>
    Effect.gen(function*() {
      const { listener, scope } = yield* start(testConfig({ SHUTDOWN_DRAIN_TIMEOUT: "300 millis" }))
      const client = yield* connect({ port: listener.port })
      yield* logIn(client)
      yield* client.write(
        "MAIL FROM:<alice@example.test>\r\nRCPT TO:<hang@example.net>\r\nDATA\r\nSubject: hang\r\n\r\nbody\r\n.\r\n"
      )
      for (const code of [250, 250, 354]) assert.strictEqual((yield* client.readReply).code, code)
      const done = yield* Deferred.make<void>()
      yield* Effect.forkChild(Effect.ensuring(Scope.close(scope, Exit.void), Deferred.succeed(done, undefined)))
      const [elapsed, reply] = yield* Effect.timed(client.readReply)
      assert.strictEqual(reply.last, "421 4.3.2 Service shutting down")
      assert.isAtLeast(Duration.toMillis(elapsed), 250)
      yield* Deferred.await(done)
    }))

  it.live("says how to fix a port that is in use", () =>
    Effect.gen(function*() {
      const first = yield* start(testConfig())
      const exit = yield* Effect.exit(start(testConfig({ SMTP_PORT: String(first.listener.port) })))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
      assert.include(error?.message ?? "", "the port is in use")
      yield* Scope.close(first.scope, Exit.void)
    }))

  it.live("traces a session as smtp.session with its hooks as children", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.NativeSpan> = []
      const tracer = Tracer.make({
        span: (options) => {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const { listener, scope } = yield* start(testConfig(), Layer.succeed(Tracer.Tracer, tracer))
      yield* converse(`${loggedIn}
        C: MAIL FROM:<alice@example.test>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: Subject: traced
        C:
        C: .
        S: 250 2.0.0 *
        C: QUIT
        S: 221 *
      `, { port: listener.port })
      yield* Scope.close(scope, Exit.void)
      const session = spans.find((s) => s.name === "smtp.session")!
      assert.isDefined(session)
      assert.strictEqual(session.attributes.get("client.address"), "127.0.0.1")
      assert.strictEqual(session.attributes.get("smtp.helo"), "client.test")
      assert.strictEqual(session.attributes.get("smtp.auth.user"), "alice")
      assert.strictEqual(session.attributes.get("smtp.auth.mechanism"), "PLAIN")
      assert.strictEqual(session.attributes.get("tls.protocol"), "TLSv1.3")
      for (const name of ["smtp.auth", "smtp.mail", "smtp.rcpt", "smtp.data"]) {
        const child = spans.find((s) => s.name === name)
        assert.isDefined(child, name)
        assert.strictEqual(child!.traceId, session.traceId, name)
      }
    }))

  it.live("refuses TLS renegotiation by the client", () =>
    Effect.gen(function*() {
      const { listener, scope } = yield* start(testConfig())
      const client = yield* connect({ port: listener.port, tls: { maxVersion: "TLSv1.2" } })
      yield* logIn(client)
      const socket = client.socket()
      assert.instanceOf(socket, tls.TLSSocket)
      const renegotiated = yield* Effect.callback<boolean>((resume) => {
        socket.once("close", () => resume(Effect.succeed(false)))
        const ok = (socket as tls.TLSSocket).renegotiate({ rejectUnauthorized: false }, (error) => resume(Effect.succeed(error === null)))
        if (!ok) resume(Effect.succeed(false))
      }).pipe(Effect.timeoutOrElse({ duration: "2 seconds", orElse: () => Effect.succeed(false) }))
      assert.isFalse(renegotiated)
      yield* client.awaitClose
      yield* Scope.close(scope, Exit.void)
    }))
})

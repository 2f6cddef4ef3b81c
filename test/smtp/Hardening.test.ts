import * as net from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Metric, Option } from "effect"
import { bareLineEndings, connectionsTotal } from "../../src/observability/Metrics.ts"
import { connect, type SmtpClient } from "../support/SmtpClient.ts"
import { auth, b64, plain, secure, startListener, testConfig, transaction } from "./harness.ts"

/** A PROXY protocol v1 line for a TCP4 client (TCP6 for an IPv6 one). */
const proxyV1 = (address: string, port = 40000) =>
  address.includes(":")
    ? `PROXY TCP6 ${address} 2001:db8::25 ${port} 587\r\n`
    : `PROXY TCP4 ${address} 192.0.2.1 ${port} 587\r\n`

/** A PROXY protocol v2 header (PROXY command, TCP over IPv4). */
const proxyV2 = (address: string, port = 40000) => {
  const header = Buffer.alloc(28)
  Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]).copy(header, 0)
  header[12] = 0x21
  header[13] = 0x11
  header.writeUInt16BE(12, 14)
  Buffer.from(address.split(".").map(Number)).copy(header, 16)
  Buffer.from([192, 0, 2, 1]).copy(header, 20)
  header.writeUInt16BE(port, 24)
  header.writeUInt16BE(587, 26)
  return header
}

const lastLine = (client: SmtpClient) => Effect.map(client.readReply, (reply) => reply.last)

/** Reads replies until the server closes; gives every last line. */
const repliesUntilClose = (client: SmtpClient) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    while (true) {
      const reply = yield* Effect.exit(client.readReply)
      if (Exit.isFailure(reply)) return lines
      lines.push(reply.value.last)
    }
  })

/** Waits (polling) until `check` holds; fails the test after two seconds. */
const eventually = (check: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      if (yield* check) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail("condition not met within 2 seconds")
  })

describe("connection limits", () => {
  it.live("refuses a connection over MAX_CONNECTIONS_PER_IP with 421 4.7.0, and admits one again when a slot frees", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ MAX_CONNECTIONS_PER_IP: "2" }))
      const first = yield* connect({ port: listener.port })
      const second = yield* connect({ port: listener.port })
      assert.strictEqual((yield* first.readReply).code, 220)
      assert.strictEqual((yield* second.readReply).code, 220)
      const third = yield* connect({ port: listener.port })
      assert.strictEqual(yield* lastLine(third), "421 4.7.0 Too many connections, try again later")
      yield* third.awaitClose
      yield* first.sendLine("QUIT")
      yield* first.awaitClose
      yield* eventually(Effect.map(listener.sessions, (s) => s.length === 1))
      const fourth = yield* connect({ port: listener.port })
      assert.strictEqual((yield* fourth.readReply).code, 220)
    }))

  it.live("exempts ALLOWLIST_CIDRS from the per-IP limit but not from MAX_CONNECTIONS, and counts the refusal", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(
        testConfig({ MAX_CONNECTIONS_PER_IP: "1", MAX_CONNECTIONS: "2", ALLOWLIST_CIDRS: "127.0.0.0/8" })
      )
      const rejected = Metric.value(Metric.withAttributes(connectionsTotal, { result: "rejected" }))
      const before = (yield* rejected).count
      const first = yield* connect({ port: listener.port })
      const second = yield* connect({ port: listener.port })
      assert.strictEqual((yield* first.readReply).code, 220)
      assert.strictEqual((yield* second.readReply).code, 220)
      const third = yield* connect({ port: listener.port })
      assert.strictEqual(yield* lastLine(third), "421 4.7.0 Too many connections, try again later")
      assert.strictEqual((yield* rejected).count, before + 1, "smtp_connections_total{result=\"rejected\"}")
    }))

  it.live("closes a STARTTLS handshake that does not finish within TLS_HANDSHAKE_TIMEOUT", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TLS_HANDSHAKE_TIMEOUT: "200 millis" }))
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      yield* client.sendLine("EHLO client.test")
      yield* client.readReply
      yield* client.sendLine("STARTTLS")
      assert.strictEqual((yield* client.readReply).code, 220)
      const [elapsed] = yield* Effect.timed(client.awaitClose) // the client never sends a ClientHello
      assert.isBelow(Duration.toMillis(elapsed), 1500)
    }))

  it.live("closes an implicit-TLS connection whose handshake does not finish within TLS_HANDSHAKE_TIMEOUT", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(
        testConfig({ SMTPS_PORT: "0", TLS_HANDSHAKE_TIMEOUT: "200 millis" })
      )
      const port = Option.getOrThrow(listener.smtpsPort)
      const [elapsed] = yield* Effect.timed(Effect.callback<void>((resume) => {
        const socket = net.connect({ port, host: "127.0.0.1" })
        socket.on("error", () => undefined)
        socket.once("close", () => resume(Effect.void))
      }))
      assert.isBelow(Duration.toMillis(elapsed), 1500)
    }))

  it.live("ends a session at SESSION_MAX_LIFETIME with 421 4.4.2", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ SESSION_MAX_LIFETIME: "300 millis" }))
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      assert.strictEqual(yield* lastLine(client), "421 4.4.2 Session lifetime exceeded, closing connection")
      yield* client.awaitClose
    }))

  it.live("ends DATA sent slower than DATA_MIN_RATE with 421 4.4.2 and delivers nothing", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(
        testConfig({ DATA_MIN_RATE: "100", DATA_RATE_WINDOW: "200 millis" })
      )
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      assert.match(yield* auth(client, "alice", "secret"), /^235 /)
      yield* client.write("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
      for (const code of [250, 250, 354]) assert.strictEqual((yield* client.readReply).code, code)
      const trickle = yield* Effect.forkChild(Effect.forever(Effect.andThen(client.write("x"), Effect.sleep("150 millis"))))
      assert.strictEqual(yield* lastLine(client), "421 4.4.2 Data rate too low, closing connection")
      yield* client.awaitClose
      yield* Fiber.interrupt(trickle)
      assert.strictEqual(seen.submissions.length, 0)
    }))
})

describe("message rates", () => {
  it.live("answers the message over RATE_LIMIT_PER_IP with 451 4.7.1 and the wait", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ RATE_LIMIT_PER_IP: "2" }))
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      yield* auth(client, "alice", "secret")
      assert.match((yield* transaction(client, "alice"))[3]!, /^250 2\.0\.0 /)
      assert.match((yield* transaction(client, "alice"))[3]!, /^250 2\.0\.0 /)
      yield* client.sendLine("MAIL FROM:<alice@example.test>")
      assert.match(yield* lastLine(client), /^451 4\.7\.1 Rate limit exceeded, try again in \d+ seconds$/)
    }))

  it.live("limits an account with RATE_LIMIT_PER_USER wherever it connects from, and no other account", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(
        testConfig({ RATE_LIMIT_PER_USER: "1", ALLOWLIST_CIDRS: "127.0.0.0/8" })
      )
      const alice = yield* connect({ port: listener.port })
      yield* secure(alice)
      yield* auth(alice, "alice", "secret")
      assert.match((yield* transaction(alice, "alice"))[3]!, /^250 /)
      const again = yield* connect({ port: listener.port })
      yield* secure(again)
      yield* auth(again, "alice", "secret")
      assert.match((yield* transaction(again, "alice"))[0]!, /^451 4\.7\.1 Rate limit exceeded, try again in \d+ seconds$/)
      const bob = yield* connect({ port: listener.port })
      yield* secure(bob)
      yield* auth(bob, "bob", "secret")
      assert.match((yield* transaction(bob, "bob"))[3]!, /^250 /)
    }))

  it.live("closes a session after MAX_MESSAGES_PER_SESSION transactions with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ MAX_MESSAGES_PER_SESSION: "2" }))
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      yield* auth(client, "alice", "secret")
      yield* transaction(client, "alice")
      yield* transaction(client, "alice")
      yield* client.sendLine("MAIL FROM:<alice@example.test>")
      assert.strictEqual(yield* lastLine(client), "421 4.7.0 Too many messages in one session, reconnect to send more")
      yield* client.awaitClose
    }))
})

describe("message memory", () => {
  /** 40 lines of 1,000 bytes: 40 KB of body, no final dot. */
  const body40k = "Subject: big\r\n\r\n" + `${"x".repeat(998)}\r\n`.repeat(40)

  it.live("answers 452 4.3.1 while other messages hold MAX_MESSAGE_MEMORY, and takes the message once they are gone", () =>
    Effect.gen(function*() {
      const { listener, memory, seen } = yield* startListener(
        testConfig({ MAX_MESSAGE_SIZE: "65536", MAX_MESSAGE_MEMORY: "65536" })
      )
      const first = yield* connect({ port: listener.port })
      yield* secure(first)
      yield* auth(first, "alice", "secret")
      yield* first.write("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
      for (let i = 0; i < 3; i++) yield* first.readReply
      yield* first.write(body40k) // and no final dot yet: the message is held
      yield* eventually(Effect.sync(() => memory.held() >= 40_000))

      const second = yield* connect({ port: listener.port })
      yield* secure(second)
      yield* auth(second, "bob", "secret")
      yield* second.sendLine("MAIL FROM:<bob@example.test> SIZE=40000")
      assert.strictEqual(yield* lastLine(second), "452 4.3.1 Insufficient system storage, try again later")
      const refused = yield* transaction(second, "bob", body40k)
      assert.deepStrictEqual(refused.slice(2), ["354 End data with <CR><LF>.<CR><LF>", "452 4.3.1 Insufficient system storage, try again later"])

      yield* first.write(".\r\n")
      assert.match(yield* lastLine(first), /^250 2\.0\.0 /)
      assert.strictEqual(memory.held(), 0)
      assert.match((yield* transaction(second, "bob", body40k))[3]!, /^250 2\.0\.0 /)
      assert.deepStrictEqual(seen.submissions.map((s) => s.principal.username), ["alice", "bob"])
    }))
})

describe("AUTH brute force", () => {
  it.live("allows three failures per connection, the third answered 421 4.7.0 and closing", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ AUTH_FAILURE_LIMIT: "100" }))
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      assert.strictEqual(yield* auth(client, "alice", "wrong1"), "535 5.7.8 Authentication credentials invalid")
      assert.strictEqual(yield* auth(client, "alice", "wrong2"), "535 5.7.8 Authentication credentials invalid")
      assert.strictEqual(yield* auth(client, "alice", "wrong3"), "421 4.7.0 Too many failed authentication attempts, try again later")
      yield* client.awaitClose
    }))

  it.live("blocks an IP+username after AUTH_FAILURE_LIMIT failures without asking the backend, but not the user elsewhere", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(testConfig({ AUTH_FAILURE_LIMIT: "4", TRUSTED_PROXIES: "127.0.0.0/8" }))
      const from = (address: string) =>
        Effect.gen(function*() {
          const client = yield* connect({ port: listener.port })
          yield* client.write(proxyV1(address))
          yield* secure(client)
          return client
        })
      const first = yield* from("198.51.100.7")
      for (const expected of ["535", "535", "421"]) assert.match(yield* auth(first, "alice", "nope"), new RegExp(`^${expected} `))
      const second = yield* from("198.51.100.7")
      assert.strictEqual(yield* auth(second, "alice", "nope"), "421 4.7.0 Too many failed authentication attempts, try again later")
      const asked = seen.verified.length
      const third = yield* from("198.51.100.7")
      assert.strictEqual(yield* auth(third, "alice", "secret"), "421 4.7.0 Too many failed authentication attempts, try again later")
      assert.strictEqual(seen.verified.length, asked, "the backend is not asked for a blocked pair")
      yield* third.awaitClose
      const elsewhere = yield* from("198.51.100.8")
      assert.strictEqual(yield* auth(elsewhere, "alice", "secret"), "235 2.7.0 Authentication successful")
      const otherUser = yield* from("198.51.100.7")
      assert.strictEqual(yield* auth(otherUser, "carol", "secret"), "235 2.7.0 Authentication successful")
    }))

  it.live("blocks an IP spraying passwords across usernames", () =>
    Effect.gen(function*() {
      // per IP: 4 x AUTH_FAILURE_LIMIT = 8 failures, whatever the usernames
      const { listener, seen } = yield* startListener(testConfig({ AUTH_FAILURE_LIMIT: "2", TRUSTED_PROXIES: "127.0.0.0/8" }))
      for (let i = 0; i < 8; i++) {
        const client = yield* connect({ port: listener.port })
        yield* client.write(proxyV1("203.0.113.9"))
        yield* secure(client)
        const reply = yield* auth(client, `user${i}`, "guess")
        assert.match(reply, i < 7 ? /^535 / : /^421 4\.7\.0 /)
      }
      const asked = seen.verified.length
      const client = yield* connect({ port: listener.port })
      yield* client.write(proxyV1("203.0.113.9"))
      yield* secure(client)
      assert.strictEqual(yield* auth(client, "somebody", "secret"), "421 4.7.0 Too many failed authentication attempts, try again later")
      assert.strictEqual(seen.verified.length, asked)
    }))

  it.live("waits longer before each 535 of the same IP+username", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ AUTH_FAILURE_DELAY: "80 millis", AUTH_FAILURE_LIMIT: "100" }))
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      const [first] = yield* Effect.timed(auth(client, "alice", "bad"))
      const [second] = yield* Effect.timed(auth(client, "alice", "bad"))
      assert.isAtLeast(Duration.toMillis(first), 75)
      assert.isAtLeast(Duration.toMillis(second), 155)
      assert.isAbove(Duration.toMillis(second), Duration.toMillis(first))
    }))

  it.live("never asks the backend about empty credentials", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      assert.strictEqual(yield* auth(client, "alice", ""), "535 5.7.8 Authentication credentials invalid")
      assert.strictEqual(yield* auth(client, "", "secret"), "535 5.7.8 Authentication credentials invalid")
      assert.deepStrictEqual(seen.verified, [])
    }))
})

describe("protocol robustness (raw sockets)", () => {
  const loggedIn = (port: number) =>
    Effect.gen(function*() {
      const client = yield* connect({ port })
      yield* secure(client)
      assert.strictEqual(yield* auth(client, "alice", "secret"), "235 2.7.0 Authentication successful")
      return client
    })

  for (const [name, variant] of [
    ["<LF>.<LF>", "\n.\n"],
    ["<LF>.<CR><LF>", "\n.\r\n"],
    ["<CR><LF>.<LF>", "\r\n.\n"],
    ["<CR>.<CR><LF>", "\r.\r\n"]
  ] as const) {
    it.live(`does not accept a message smuggled behind ${name}`, () =>
      Effect.gen(function*() {
        const { listener, seen } = yield* startListener(testConfig())
        const client = yield* loggedIn(listener.port)
        yield* client.write("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
        for (const code of [250, 250, 354]) assert.strictEqual((yield* client.readReply).code, code)
        yield* client.write(
          `Subject: outer\r\n\r\nbefore${variant}MAIL FROM:<alice@example.test>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n` +
            "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        )
        assert.match(yield* lastLine(client), /^250 2\.0\.0 Ok: queued as TEST1$/)
        yield* client.sendLine("NOOP")
        assert.strictEqual(yield* lastLine(client), "250 2.0.0 OK") // nothing else was pending
        assert.strictEqual(seen.submissions.length, 1)
        const raw = Buffer.from(seen.submissions[0]!.message.raw).toString("latin1")
        assert.include(raw, "victim@example.net")
        assert.include(raw, "Subject: smuggled")
      }))
  }

  it.live("rewrites bare CR and bare LF in the body to CRLF before the message goes anywhere, and counts them", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(testConfig())
      const before = (yield* Metric.value(bareLineEndings)).count
      const client = yield* loggedIn(listener.port)
      yield* client.write("MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
      for (const code of [250, 250, 354]) assert.strictEqual((yield* client.readReply).code, code)
      yield* client.write("Subject: bare\nX-Test: 1\r\n\r\nline one\rline two\nline three\r\n.\r\n")
      assert.match(yield* lastLine(client), /^250 /)
      const raw = Buffer.from(seen.submissions[0]!.message.raw).toString("latin1")
      assert.strictEqual(raw, "Subject: bare\r\nX-Test: 1\r\n\r\nline one\r\nline two\r\nline three\r\n")
      assert.strictEqual((yield* Metric.value(bareLineEndings)).count - before, 3)
    }))

  it.live("closes on an over-long command line with 421 4.5.2", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      yield* client.sendLine(`NOOP ${"x".repeat(20_000)}`)
      assert.strictEqual(yield* lastLine(client), "421 4.5.2 Line too long, closing connection")
      yield* client.awaitClose
    }))

  it.live("closes after too many unknown commands with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      for (let i = 0; i < 10; i++) yield* client.sendLine(`XYZZY${i}`)
      const replies = yield* repliesUntilClose(client)
      assert.strictEqual(replies.length, 10)
      assert.match(replies[0]!, /^500 5\.5\.2 /)
      assert.strictEqual(replies[9], "421 4.7.0 Too many errors, closing connection")
    }))

  it.live("closes after too many invalid commands with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* loggedIn(listener.port)
      for (let i = 0; i < 10; i++) yield* client.sendLine("RCPT TO:<bob@example.net>") // no MAIL first: 503
      const replies = yield* repliesUntilClose(client)
      assert.strictEqual(replies.filter((r) => r.startsWith("503 ")).length, 10)
      assert.strictEqual(replies[replies.length - 1], "421 4.7.0 Too many errors, closing connection")
    }))

  it.live("closes on an HTTP request with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      yield* client.write("POST / HTTP/1.1\r\nHost: mx.test\r\nContent-Length: 4\r\n\r\nQUIT\r\n")
      assert.strictEqual(yield* lastLine(client), "421 4.7.0 HTTP requests are not accepted here, closing connection")
      yield* client.awaitClose
    }))

  it.live("closes on a command sent before the greeting with 421 4.7.0", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* client.sendLine("GET / HTTP/1.0")
      assert.strictEqual(yield* lastLine(client), "421 4.7.0 Command sent before the greeting, closing connection")
      yield* client.awaitClose
    }))

  it.live("discards commands pipelined behind STARTTLS instead of running them after the handshake", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* client.readReply
      yield* client.sendLine("EHLO client.test")
      yield* client.readReply
      yield* client.write(`STARTTLS\r\nEHLO evil.test\r\nAUTH PLAIN ${plain("alice", "secret")}\r\nMAIL FROM:<alice@example.test>\r\n`)
      assert.strictEqual((yield* client.readReply).code, 220)
      yield* client.startTls
      yield* client.sendLine("NOOP")
      assert.strictEqual(yield* lastLine(client), "250 2.0.0 OK")
      assert.deepStrictEqual(seen.verified, [])
    }))

  it.live("answers STARTTLS twice, AUTH twice and AUTH in a transaction with 503 5.5.1", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* loggedIn(listener.port)
      yield* client.sendLine("STARTTLS")
      assert.strictEqual(yield* lastLine(client), "503 5.5.1 TLS already active")
      yield* client.sendLine(`AUTH PLAIN ${plain("alice", "secret")}`)
      assert.strictEqual(yield* lastLine(client), "503 5.5.1 Already authenticated")
      yield* client.sendLine("MAIL FROM:<alice@example.test>")
      yield* client.readReply
      yield* client.sendLine(`AUTH PLAIN ${plain("alice", "secret")}`)
      assert.strictEqual(yield* lastLine(client), "503 5.5.1 AUTH not permitted during a mail transaction")
    }))

  it.live("answers malformed base64 with 501 5.5.2 and a cancelled exchange with 501 5.7.0, asking no backend", () =>
    Effect.gen(function*() {
      const { listener, seen } = yield* startListener(testConfig())
      const client = yield* connect({ port: listener.port })
      yield* secure(client)
      yield* client.sendLine("AUTH PLAIN not*base64!")
      assert.strictEqual(yield* lastLine(client), "501 5.5.2 Cannot decode the base64 response")
      yield* client.sendLine("AUTH LOGIN")
      assert.strictEqual(yield* lastLine(client), "334 VXNlcm5hbWU6")
      yield* client.sendLine("%%%")
      assert.strictEqual(yield* lastLine(client), "501 5.5.2 Cannot decode the base64 response")
      yield* client.sendLine(`AUTH LOGIN ${b64("alice")}`)
      assert.strictEqual(yield* lastLine(client), "334 UGFzc3dvcmQ6")
      yield* client.sendLine("*")
      assert.strictEqual(yield* lastLine(client), "501 5.7.0 Authentication cancelled")
      yield* client.sendLine("AUTH PLAIN")
      assert.strictEqual(yield* lastLine(client), "334 ")
      yield* client.sendLine("*")
      assert.strictEqual(yield* lastLine(client), "501 5.7.0 Authentication cancelled")
      yield* client.sendLine("NOOP")
      assert.strictEqual(yield* lastLine(client), "250 2.0.0 OK")
      assert.deepStrictEqual(seen.verified, [])
    }))

  it.live("refuses recipients that are address literals, local domains, or route with % or !", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig())
      const client = yield* loggedIn(listener.port)
      yield* client.sendLine("MAIL FROM:<alice@example.test>")
      assert.match(yield* lastLine(client), /^250 /)
      const cases = [
        ["bob@[192.0.2.1]", "550 5.1.2 Address literals are not accepted as recipients"],
        ["bob@[IPv6:2001:db8::1]", "550 5.1.2 Address literals are not accepted as recipients"],
        ["bob@localhost", "550 5.1.2 Local domains are not accepted as recipients"],
        ["bob@printer.local", "550 5.1.2 Local domains are not accepted as recipients"],
        ["bob%example.org@example.net", "550 5.1.3 Routing characters (% or !) are not accepted in recipients"],
        ["example.org!bob@example.net", "550 5.1.3 Routing characters (% or !) are not accepted in recipients"],
        ["bob@example.net", "250 2.1.5 Recipient ok"]
      ] as const
      for (const [address, expected] of cases) {
        yield* client.sendLine(`RCPT TO:<${address}>`)
        assert.strictEqual(yield* lastLine(client), expected, address)
      }
    }))
})

describe("PROXY protocol", () => {
  it.live("takes the client address from a v1 or v2 header sent by a trusted proxy (CIDR)", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TRUSTED_PROXIES: "127.0.0.0/8" }))
      const v1 = yield* connect({ port: listener.port })
      yield* v1.write(proxyV1("198.51.100.20", 41000))
      assert.strictEqual((yield* v1.readReply).code, 220)
      const v2 = yield* connect({ port: listener.port })
      yield* v2.write(proxyV2("198.51.100.21", 42000))
      assert.strictEqual((yield* v2.readReply).code, 220)
      const peers = (yield* listener.sessions).map((s) => s.peer).sort()
      assert.deepStrictEqual(peers, ["198.51.100.20:41000", "198.51.100.21:42000"])
    }))

  it.live("counts connection limits on the address behind the proxy", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TRUSTED_PROXIES: "127.0.0.1/32", MAX_CONNECTIONS_PER_IP: "1" }))
      const a = yield* connect({ port: listener.port })
      yield* a.write(proxyV1("198.51.100.30"))
      assert.strictEqual((yield* a.readReply).code, 220)
      const b = yield* connect({ port: listener.port })
      yield* b.write(proxyV2("198.51.100.31"))
      assert.strictEqual((yield* b.readReply).code, 220)
      const c = yield* connect({ port: listener.port })
      yield* c.write(proxyV1("198.51.100.30", 40001))
      assert.strictEqual(yield* lastLine(c), "421 4.7.0 Too many connections, try again later")
    }))

  it.live("counts IPv6 clients behind the proxy by their /64", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TRUSTED_PROXIES: "127.0.0.1/32", MAX_CONNECTIONS_PER_IP: "1" }))
      const a = yield* connect({ port: listener.port })
      yield* a.write(proxyV1("2001:db8:1:2::1"))
      assert.strictEqual((yield* a.readReply).code, 220)
      const b = yield* connect({ port: listener.port })
      yield* b.write(proxyV1("2001:db8:1:3::1"))
      assert.strictEqual((yield* b.readReply).code, 220)
      const c = yield* connect({ port: listener.port })
      yield* c.write(proxyV1("2001:db8:1:2:abcd::9"))
      assert.strictEqual(yield* lastLine(c), "421 4.7.0 Too many connections, try again later")
    }))

  it.live("closes a connection from a trusted proxy that sends no PROXY header", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TRUSTED_PROXIES: "127.0.0.0/8" }))
      const client = yield* connect({ port: listener.port })
      yield* client.sendLine("EHLO client.test")
      yield* client.awaitClose
      assert.deepStrictEqual(yield* listener.sessions, [])
    }))

  it.live("ignores a PROXY header from a peer that is not a trusted proxy", () =>
    Effect.gen(function*() {
      const { listener } = yield* startListener(testConfig({ TRUSTED_PROXIES: "10.0.0.0/8" }))
      const client = yield* connect({ port: listener.port })
      assert.strictEqual((yield* client.readReply).code, 220)
      yield* client.write(proxyV1("198.51.100.40"))
      assert.match(yield* lastLine(client), /^500 5\.5\.2 /)
      const peers = (yield* listener.sessions).map((s) => s.peer.split(":")[0])
      assert.deepStrictEqual(peers, ["127.0.0.1"])
    }))
})

import * as crypto from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { generalizer, Recording, summarize } from "../../src/capture/Recorder.ts"
import { printEntry } from "../../src/capture/Transcript.ts"

const b64 = (s: string) => Buffer.from(s).toString("base64")

/** A recording fed by a script: `>` lines are client bytes (CRLF added, `|` joins lines of one chunk), `<` replies. */
const record = (steps: ReadonlyArray<string>, options: { keep?: boolean; cap?: number } = {}) => {
  const recording = new Recording(options.keep ?? true, options.cap ?? 10_000, generalizer("gateway.test", "127.0.0.1"))
  for (const step of steps) {
    if (step.startsWith("> ")) recording.client(step.slice(2).split("|").map((l) => l + "\r\n").join(""))
    else if (step.startsWith("< ")) recording.server(step.slice(2).split("|").join("\r\n"))
    else recording.tls("TLS_AES_256_GCM_SHA384")
  }
  return recording.finish().map(printEntry)
}

describe("Recording", () => {
  it("redacts PLAIN and LOGIN payloads, with and without an initial response, and marks refused ones", () => {
    const lines = record([
      "< 220 gateway.test ESMTP ready",
      "> AUTH PLAIN " + b64("\0alice\0pw1"),
      "< 235 2.7.0 Authentication successful",
      "> AUTH PLAIN",
      "< 334 ",
      "> " + b64("\0alice\0pw2"),
      "< 535 5.7.8 Authentication credentials invalid",
      "> AUTH LOGIN " + b64("alice"),
      "< 334 UGFzc3dvcmQ6",
      "> " + b64("pw3"),
      "< 235 2.7.0 Authentication successful",
      "> AUTH LOGIN",
      "< 334 VXNlcm5hbWU6",
      "> " + b64("alice"),
      "< 334 UGFzc3dvcmQ6",
      "> " + b64("pw4"),
      "< 235 2.7.0 Authentication successful"
    ])
    assert.deepStrictEqual(lines, [
      "S: 220 * ESMTP ready",
      "C: AUTH PLAIN <redacted>",
      "S: 235 2.7.0 Authentication successful",
      "C: AUTH PLAIN",
      "S: 334 ",
      "C: <redacted-invalid>",
      "S: 535 5.7.8 Authentication credentials invalid",
      "C: AUTH LOGIN <redacted>",
      "S: 334 UGFzc3dvcmQ6",
      "C: <redacted>",
      "S: 235 2.7.0 Authentication successful",
      "C: AUTH LOGIN",
      "S: 334 VXNlcm5hbWU6",
      "C: <redacted>",
      "S: 334 UGFzc3dvcmQ6",
      "C: <redacted>",
      "S: 235 2.7.0 Authentication successful",
      "-- client closed"
    ])
  })

  it("redacts SASL payloads a client sends before the server asked for them", () => {
    const lines = record(["> AUTH LOGIN|" + b64("alice") + "|" + b64("secret"), "< 334 VXNlcm5hbWU6", "< 334 UGFzc3dvcmQ6", "< 235 2.7.0 ok"])
    assert.deepStrictEqual(lines.slice(0, 3), ["C: AUTH LOGIN", "C: <redacted>", "C: <redacted>"])
    assert.notInclude(lines.join("\n"), b64("secret"))
  })

  it("keeps pipelined commands in the order they came, before their replies", () => {
    const lines = record([
      "> MAIL FROM:<a@example.com>|RCPT TO:<b@example.net>|DATA",
      "< 250 2.1.0 Sender ok",
      "< 250 2.1.5 Recipient ok",
      "< 354 End data with <CR><LF>.<CR><LF>",
      "> Subject: x||..dot|.|QUIT",
      "< 250 2.0.0 Ok: queued as 01ABC",
      "< 221 2.0.0 Bye"
    ])
    assert.deepStrictEqual(lines, [
      "C: MAIL FROM:<a@example.com>",
      "C: RCPT TO:<b@example.net>",
      "C: DATA",
      "S: 250 2.1.0 Sender ok",
      "S: 250 2.1.5 Recipient ok",
      "S: 354 End data with <CR><LF>.<CR><LF>",
      "C: Subject: x",
      "C:",
      "C: ..dot",
      "C: .",
      "C: QUIT",
      "S: 250 2.0.0 Ok: queued as *",
      "S: 221 2.0.0 Bye",
      "-- server closed"
    ])
  })

  it("replaces a body by its size and the SHA-256 of the message as received when bodies are digested", () => {
    const lines = record(["> DATA", "< 354 go", "> Subject: x||..dot|.", "< 250 2.0.0 Ok: queued as X"], { keep: false })
    const message = "Subject: x\r\n\r\n.dot\r\n"
    const sha = crypto.createHash("sha256").update(message).digest("hex")
    assert.deepStrictEqual(lines.slice(2, 4), [`-- body ${message.length} bytes sha256:${sha}`, "C: ."])
  })

  it("digests a kept body that grows past the cap, and records a body cut short", () => {
    const big = record(["> DATA", "< 354 go", "> " + Array.from({ length: 20 }, () => "x".repeat(70)).join("|") + "|.", "< 552 too big"], { cap: 1000 })
    assert.match(big[2]!, /^-- body 1440 bytes sha256:[0-9a-f]{64}$/)
    assert.strictEqual(big.length, 6)
    const cut = record(["> DATA", "< 354 go", "> Subject: cut short"])
    assert.deepStrictEqual(cut, ["C: DATA", "S: 354 go", "C: Subject: cut short", "-- client closed"])
  })

  it("says in one line what happened", () => {
    const recording = new Recording(true, 10_000, generalizer("gateway.test", "127.0.0.1"))
    for (const [dir, text] of [
      ["<", "220 gateway.test ESMTP ready"], [">", "STARTTLS"], ["<", "220 2.0.0 Ready to start TLS"], ["tls", ""],
      [">", "AUTH PLAIN " + b64("\0alice\0pw")], ["<", "235 2.7.0 Authentication successful"],
      [">", "MAIL FROM:<mallory@example.com>"], ["<", "550 5.7.1 Sender address not allowed for this account"],
      [">", "MAIL FROM:<alice@example.com>"], ["<", "250 2.1.0 Sender ok"], [">", "DATA"], ["<", "354 go"], [">", "Subject: cut"]
    ] as const) {
      if (dir === ">") recording.client(text + "\r\n")
      else if (dir === "<") recording.server(text)
      else recording.tls("")
    }
    assert.strictEqual(
      summarize(recording.finish()),
      "TLS; AUTH PLAIN accepted; 0 messages accepted; refused: 550 5.7.1 Sender address not allowed for this account; " +
        "the client left during DATA; closed by the client"
    )
  })

  it("treats lines sent after a refused DATA as commands", () => {
    const lines = record(["> DATA|AUTH PLAIN " + b64("\0a\0b"), "< 503 5.5.1 Error: need RCPT command", "< 235 ok"])
    assert.deepStrictEqual(lines.slice(0, 3), ["C: DATA", "C: AUTH PLAIN <redacted>", "S: 503 5.5.1 Error: need RCPT command"])
  })

  it("writes the gateway's host name, the client address, queue ids and retry delays as *", () => {
    const general = generalizer("gateway.test", "127.0.0.1")
    assert.strictEqual(general("250-gateway.test Nice to meet you, [127.0.0.1]"), "250-* Nice to meet you, *")
    assert.strictEqual(general("250 2.0.0 Ok: queued as 01HXYZ"), "250 2.0.0 Ok: queued as *")
    assert.strictEqual(general("451 4.7.1 Rate limit exceeded, try again in 42 seconds"), "451 4.7.1 Rate limit exceeded, try again in * seconds")
    assert.strictEqual(general("250 mygateway.testing ok"), "250 mygateway.testing ok")
  })

  it("marks where TLS started", () => {
    assert.deepStrictEqual(record(["> STARTTLS", "< 220 2.0.0 Ready to start TLS", "tls"]).slice(0, 3), [
      "C: STARTTLS",
      "S: 220 2.0.0 Ready to start TLS",
      "-- tls TLS_AES_256_GCM_SHA384"
    ])
  })
})

import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { Recorder } from "../../src/capture/Recorder.ts"
import { replay } from "../../src/capture/Replay.ts"
import { startTls } from "../support/converse.ts"
import { loadConfig } from "../support/TestConfig.ts"
import { alice, startGateway, tempDir } from "../support/TestGateway.ts"

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")

/** Every base64 text that carries `secret`, whatever its offset in the encoded payload. */
const encodingsOf = (secret: string) =>
  ["", "a", "ab"].map((pad) => {
    const encoded = b64(pad + secret)
    const skip = Math.ceil((pad.length * 4) / 3)
    return encoded.slice(skip, skip + Math.floor((secret.length * 4) / 3) - 2)
  })

interface Capture {
  readonly name: string
  readonly text: string
  readonly mode: number
}

/** Runs `sessions` against a gateway with CAPTURE_DIR set, stops it (writes finish), returns the files. */
const captured = (env: Readonly<Record<string, string>>, sessions: (port: number) => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function*() {
    const dir = yield* tempDir("smtp-gateway-capture-")
    const scope = yield* Scope.make()
    const gateway = yield* startGateway({ ...env, CAPTURE_DIR: dir }).pipe(Scope.provide(scope))
    yield* sessions(gateway.smtpPort)
    yield* Scope.close(scope, Exit.void)
    return fs.readdirSync(dir).sort().map((name): Capture => ({
      name,
      text: fs.readFileSync(path.join(dir, name), "utf8"),
      mode: fs.statSync(path.join(dir, name)).mode & 0o777
    }))
  })

const send = `
  C: MAIL FROM:<alice@example.com>
  S: 250 *
  C: RCPT TO:<bob@example.net>
  S: 250 *
  C: DATA
  S: 354 *
  C: From: alice@example.com
  C: Subject: captured
  C:
  C: ..a body line
  C: .
  S: 250 2.0.0 *
  C: QUIT
  S: 221 *
`

describe("Recorder", () => {
  it.live("never writes credentials sent with PLAIN or LOGIN, with or without an initial response", () =>
    Effect.gen(function*() {
      const { password, username } = alice
      const wrong = "hunter2-not-alices"
      const plain = b64(`\0${username}\0${password}`)
      const sessions = {
        "plain-initial": `C: AUTH PLAIN ${plain}\nS: 235 *\n${send}`,
        "plain-continued": `C: AUTH PLAIN\nS: 334 *\nC: ${plain}\nS: 235 *\n${send}`,
        "login-initial": `C: AUTH LOGIN ${b64(username)}\nS: 334 *\nC: ${b64(password)}\nS: 235 *\n${send}`,
        "login": `C: AUTH LOGIN\nS: 334 *\nC: ${b64(username)}\nS: 334 *\nC: ${b64(password)}\nS: 235 *\n${send}`,
        "refused": `C: AUTH PLAIN ${b64(`\0${username}\0${wrong}`)}\nS: 535 *\nC: AUTH LOGIN\nS: 334 *\nC: ${b64(username)}\n` +
          `S: 334 *\nC: ${b64(wrong)}\nS: 535 *\nC: QUIT\nS: 221 *`
      }
      const captures = yield* captured({ AUTH_FAILURE_DELAY: "0 millis" }, (port) =>
        Effect.forEach(Object.entries(sessions), ([helo, script]) => replay(startTls(helo) + script, { port })))
      assert.strictEqual(captures.length, 5)
      const forbidden = [password, wrong, plain, b64(username), ...encodingsOf(password), ...encodingsOf(wrong)]
      for (const capture of captures) {
        for (const secret of forbidden) assert.notInclude(capture.text, secret, `${capture.name} leaks "${secret}"`)
      }
      const of = (helo: string) => captures.find((c) => c.text.includes(`# ehlo: ${helo}\n`))!.text
      assert.include(of("plain-initial"), "C: AUTH PLAIN <redacted>\nS: 235")
      assert.include(of("plain-continued"), "C: AUTH PLAIN\nS: 334 \nC: <redacted>\nS: 235")
      assert.include(of("login-initial"), "C: AUTH LOGIN <redacted>\nS: 334 UGFzc3dvcmQ6\nC: <redacted>\nS: 235")
      assert.include(of("login"), "C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: <redacted>\nS: 334 UGFzc3dvcmQ6\nC: <redacted>\nS: 235")
      assert.include(of("refused"), "C: AUTH PLAIN <redacted-invalid>\nS: 535")
      assert.include(of("refused"), "C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: <redacted-invalid>\nS: 334 UGFzc3dvcmQ6\nC: <redacted-invalid>\nS: 535")

      // and the file itself: its name, its mode, a header saying what happened, replies generalised
      const capture = captures.find((c) => c.text.includes("# ehlo: plain-initial\n"))!
      assert.match(capture.name, /^\d{8}T\d{6}Z-[0-9a-z]+\.smtp$/)
      assert.strictEqual(capture.mode, 0o600)
      const header = capture.text.split("\n").filter((l) => l.startsWith("# "))
      assert.match(header.find((h) => h.startsWith("# date: "))!, /^# date: \d{4}-\d\d-\d\dT/)
      assert.match(header.find((h) => h.startsWith("# gateway: "))!, /^# gateway: smtp-gateway \d+\.\d+\.\d+ \(gateway\.test\)$/)
      assert.match(header.find((h) => h.startsWith("# client: "))!, /^# client: 127\.0\.0\.1:\d+$/)
      assert.include(header, "# user: alice")
      assert.include(header, "# what happened: TLS; AUTH PLAIN accepted; 1 message accepted; closed by the server")
      assert.include(capture.text, "S: 220 2.0.0 Ready to start TLS\n-- tls ")
      assert.include(capture.text, "C: ..a body line\nC: .\nS: 250 2.0.0 Ok: queued as *\n")
      assert.include(capture.text, "S: 220 * ESMTP ready\n", "the host name is generalised in replies")
    }))
})

describe("Recorder filters", () => {
  /** The Recorder alone, configured from these variables, writing to `dir` (a temporary CAPTURE_DIR by default). */
  const recorderWith = (env: Readonly<Record<string, string>>, dir?: string) =>
    Effect.gen(function*() {
      const captureDir = dir ?? (yield* tempDir("smtp-gateway-capture-"))
      return yield* Recorder.make(loadConfig({ ...env, CAPTURE_DIR: captureDir, DATA_DIR: captureDir }))
    })

  it.effect("records only clients in CAPTURE_CLIENTS, and no one at CAPTURE_SAMPLE_RATE=0", () =>
    Effect.gen(function*() {
      const recorder = yield* recorderWith({ CAPTURE_CLIENTS: "10.0.0.0/8, 192.0.2.7" })
      assert.isDefined(recorder.open("a", "10.1.2.3", 1000))
      assert.isDefined(recorder.open("b", "::ffff:192.0.2.7", 1000))
      assert.isUndefined(recorder.open("c", "127.0.0.1", 1000))
      assert.isUndefined((yield* recorderWith({ CAPTURE_SAMPLE_RATE: "0" })).open("d", "127.0.0.1", 1000))
      assert.isDefined((yield* recorderWith({})).open("e", "127.0.0.1", 1000))
    }))

  it.effect("writes only the sessions of users in CAPTURE_USERS", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("smtp-gateway-capture-")
      // the recorder's scope ends before the check: it waits for its writes
      yield* Effect.scoped(Effect.gen(function*() {
        const recorder = yield* recorderWith({ CAPTURE_USERS: "bob, ALICE" }, dir)
        for (const [id, user] of [["s1", "alice"], ["s2", "carol"], ["s3", undefined]] as const) {
          recorder.open(id, "127.0.0.1", 1000)?.server("220 gateway.test ESMTP ready")
          yield* recorder.close(id, { user, helo: "x.test" })
        }
      }))
      assert.deepStrictEqual(fs.readdirSync(dir).map((f) => f.replace(/^\d{8}T\d{6}Z-/, "")), ["s1.smtp"])
    }))
})

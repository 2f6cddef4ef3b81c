/**
 * Maintenance tool, not a test: what session capture costs. Runs the same load (sessions of STARTTLS,
 * AUTH PLAIN and one 10 kB message, 16 at a time) against the real gateway without capture, with
 * CAPTURE_BODY=keep and with CAPTURE_BODY=digest, three rounds, and prints sessions per second for each.
 * Run: npx tsx scripts/capture-bench.ts [sessions]
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { generalizer, Recording } from "../src/capture/Recorder.ts"
import { replay } from "../src/capture/Replay.ts"
import { print } from "../src/capture/Transcript.ts"
import { alice, startGateway, tempDir } from "../test/support/TestGateway.ts"

const sessions = Number(process.argv[2] ?? 400)
const concurrency = 16
const body = Array.from({ length: 130 }, (_, i) => `C: line ${String(i).padStart(3, "0")} ${"lorem ipsum ".repeat(6)}`).join("\n")
const script = `
  S: 220 *
  C: EHLO bench.test
  S: 250 *
  C: STARTTLS
  S: 220 *
  C: EHLO bench.test
  S: 250 *
  C: AUTH PLAIN ${Buffer.from(`\0${alice.username}\0${alice.password}`).toString("base64")}
  S: 235 *
  C: MAIL FROM:<alice@example.com>
  C: RCPT TO:<bob@example.net>
  C: DATA
  S: 250 *
  S: 250 *
  S: 354 *
  C: From: alice@example.com
  C: Subject: bench
  C:
  ${body}
  C: .
  S: 250 2.0.0 *
  C: QUIT
  S: 221 *
`

/** Limits out of the way: one client address sends everything. */
const unlimited = {
  LOG_LEVEL: "error",
  MAX_CONNECTIONS_PER_IP: "1000",
  RATE_LIMIT_PER_IP: "1000000000",
  RATE_LIMIT_PER_USER: "1000000000"
}

const measure = (label: string, env: Record<string, string>) =>
  Effect.scoped(Effect.gen(function*() {
    const gateway = yield* startGateway({ ...unlimited, ...env })
    yield* Effect.forEach(Array.from({ length: 20 }), () => replay(script, { port: gateway.smtpPort }), { concurrency }) // warm up
    const started = performance.now()
    yield* Effect.forEach(Array.from({ length: sessions }), () => replay(script, { port: gateway.smtpPort }), { concurrency })
    const seconds = (performance.now() - started) / 1000
    const captures = env.CAPTURE_DIR === undefined ? 0 : fs.readdirSync(env.CAPTURE_DIR).length
    process.stdout.write(`${label.padEnd(24)} ${(sessions / seconds).toFixed(1).padStart(7)} sessions/s  (${sessions} in ${seconds.toFixed(2)} s, ${captures} capture files)\n`)
  }))

/** The recorder's own work for one such session (split, redact, hash, print), without sockets: a stable number. */
const recorderCost = (body: "keep" | "digest") => {
  const clientLines = script.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("C:")).map((l) => l.slice(3))
  const runs = 2000
  const started = performance.now()
  for (let i = 0; i < runs; i++) {
    const recording = new Recording(body === "keep", 26_214_400, generalizer("gateway.test", "127.0.0.1"))
    recording.server("220 gateway.test ESMTP ready")
    for (const line of clientLines) {
      recording.client(line + "\r\n")
      if (line === "DATA") recording.server("250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>")
    }
    recording.server("250 2.0.0 Ok: queued as 01ABC")
    print({ header: [], entries: recording.finish().map((entry) => ({ line: 0, entry })) })
  }
  const micros = ((performance.now() - started) * 1000) / runs
  process.stdout.write(`recorder alone, ${body.padEnd(6)}   ${micros.toFixed(0).padStart(7)} µs of CPU per session (${runs} sessions)\n`)
}

/** Three rounds, alternating, so a noisy machine shows as spread rather than as a difference. */
const main = Effect.gen(function*() {
  recorderCost("keep")
  recorderCost("digest")
  const dir = yield* tempDir("smtp-gateway-bench-")
  for (let round = 1; round <= 3; round++) {
    yield* measure(`no capture`, {})
    yield* measure(`capture, body kept`, { CAPTURE_DIR: path.join(dir, `keep-${round}`), CAPTURE_BODY: "keep" })
    yield* measure(`capture, body digest`, { CAPTURE_DIR: path.join(dir, `digest-${round}`), CAPTURE_BODY: "digest" })
  }
})

Effect.runPromise(Effect.scoped(main)).catch((error: unknown) => {
  process.stderr.write(`capture-bench: ${String(error)}\n`)
  process.exit(1)
})

import * as net from "node:net"
import * as tls from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { alice, startGateway } from "../support/TestGateway.ts"

/** Deterministic (mulberry32), so a failure can be replayed with its seed. */
const rng = (seed: number) => () => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const verbs = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "AUTH", "STARTTLS", "HELP", "BDAT", "XCLIENT", "GET / HTTP/1.1", ""]
const atoms = ["<alice@example.com>", "<>", "<a%b@x.y>", "<bob@[127.0.0.1]>", "PLAIN", "LOGIN", "=", "*", "SIZE=99999999999", "BODY=8BITMIME", "\u0000", "\u00ff\u00fe", "é", "<" + "x".repeat(300) + "@e.com>"]

const mutate = (random: () => number, line: string): string => {
  const pick = random()
  if (pick < 0.1) return line + "x".repeat(Math.floor(random() * 20_000)) // over-long lines
  if (pick < 0.2) return Array.from({ length: Math.floor(random() * 40) }, () => String.fromCharCode(Math.floor(random() * 256))).join("")
  if (pick < 0.3) return line.replace(/ /g, "\t")
  if (pick < 0.35) return line + "\r"
  return line
}

const commandLine = (random: () => number) => {
  const verb = verbs[Math.floor(random() * verbs.length)]!
  const args = Array.from({ length: Math.floor(random() * 3) }, () => atoms[Math.floor(random() * atoms.length)]!)
  return mutate(random, [verb, ...args].join(verb.endsWith(":") ? "" : " "))
}

const authExchange = (random: () => number) => {
  const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64")
  const choices = [
    `AUTH PLAIN ${b64(`\0${alice.username}\0wrong${Math.floor(random() * 100)}`)}`,
    `AUTH PLAIN ${b64("\0\0")}`,
    "AUTH PLAIN ###",
    "AUTH LOGIN\r\n*",
    `AUTH LOGIN ${b64("nobody")}\r\n${b64("x")}`,
    "AUTH PLAIN\r\n" + b64(String.fromCharCode(...Array.from({ length: 30 }, () => Math.floor(random() * 256)))),
    "AUTH CRAM-MD5",
    "AUTH LOGIN\r\n%%%%"
  ]
  return choices[Math.floor(random() * choices.length)]!
}

const mimeBody = (random: () => number) => {
  const depth = Math.floor(random() * 14)
  let body = "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: fuzz\r\n"
  for (let d = 0; d < depth; d++) body += `Content-Type: multipart/mixed; boundary="b${d}"\r\n\r\n--b${d}\r\n`
  body += random() < 0.5 ? "Content-Transfer-Encoding: base64\r\n\r\n%%%%not base64\r\n" : "\r\n" + "=3D=ZZ".repeat(Math.floor(random() * 500)) + "\r\n"
  if (random() < 0.5) for (let d = depth - 1; d >= 0; d--) body += `--b${d}--\r\n`
  if (random() < 0.3) body = body.replace(/\r\n/g, random() < 0.5 ? "\n" : "\r")
  if (random() < 0.2) body += "\n.\nMAIL FROM:<alice@example.com>\r\n"
  return body.replace(/^\./gm, "..") + "\r\n.\r\n"
}

interface Outcome {
  readonly lines: ReadonlyArray<string>
}

/** One connection: optional STARTTLS + AUTH as alice, then the fuzzed input; collects every reply line. */
const session = (port: number, random: () => number) =>
  Effect.callback<Outcome>((resume) => {
    const lines: Array<string> = []
    let buffer = ""
    let socket: net.Socket | tls.TLSSocket = net.connect({ port, host: "127.0.0.1" })
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString("latin1")
      let at: number
      while ((at = buffer.indexOf("\r\n")) >= 0) {
        lines.push(buffer.slice(0, at))
        buffer = buffer.slice(at + 2)
      }
    }
    const finish = () => {
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed({ lines }))
    }
    const timer = setTimeout(finish, 1500)
    socket.on("data", onData)
    socket.on("error", () => undefined)
    socket.on("close", finish)
    const write = (text: string) => {
      if (!socket.destroyed) socket.write(text, "latin1")
    }
    const waitFor = (test: (line: string) => boolean, then: () => void) => {
      const check = setInterval(() => {
        if (lines.some(test)) {
          clearInterval(check)
          then()
        }
      }, 5)
      setTimeout(() => clearInterval(check), 1400).unref()
    }
    const fuzz = () => {
      const kind = random()
      const parts = kind < 0.4
        ? Array.from({ length: 1 + Math.floor(random() * 8) }, () => commandLine(random))
        : kind < 0.7
        ? [authExchange(random)]
        : ["MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.net>", "DATA", mimeBody(random)]
      write(parts.join("\r\n") + "\r\n")
    }
    waitFor((l) => l.startsWith("220 "), () => {
      if (random() < 0.3) return fuzz() // in cleartext
      write("EHLO fuzz.test\r\nSTARTTLS\r\n")
      waitFor((l) => l.startsWith("220 2.0.0"), () => {
        const plain = socket
        plain.off("data", onData)
        plain.off("close", finish)
        socket = tls.connect({ socket: plain, rejectUnauthorized: false })
        socket.on("data", onData)
        socket.on("error", () => undefined)
        socket.on("close", finish)
        socket.once("secureConnect", () => {
          const login = Buffer.from(`\0${alice.username}\0${alice.password}`).toString("base64")
          write(`EHLO fuzz.test\r\nAUTH PLAIN ${login}\r\n`)
          waitFor((l) => /^(235|5\d\d|4\d\d) /.test(l), fuzz)
        })
      })
    })
  })

describe("fuzz", () => {
  it.live("answers random and mutated commands, AUTH exchanges and MIME bodies with well-formed replies, and stays up", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({
        AUTH_FAILURE_LIMIT: "1000000",
        AUTH_FAILURE_DELAY: "1 millis",
        RATE_LIMIT_PER_IP: "1000000",
        RATE_LIMIT_PER_USER: "1000000",
        MAX_CONNECTIONS_PER_IP: "1000",
        PARSE_TIMEOUT: "2 seconds"
      })
      const seed = 20_250_701
      const random = rng(seed)
      const heapBefore = process.memoryUsage().heapUsed
      const deadline = (yield* Clock.currentTimeMillis) + 10_000
      let sessions = 0
      let replies = 0
      const bad: Array<string> = []
      while ((yield* Clock.currentTimeMillis) < deadline && sessions < 400) {
        const batch = yield* Effect.forEach(
          Array.from({ length: 8 }, () => rng(Math.floor(random() * 2 ** 31))),
          (r) => session(gateway.smtpPort, r),
          { concurrency: 8 }
        )
        sessions += batch.length
        for (const { lines } of batch) {
          replies += lines.length
          for (const line of lines) if (!/^\d{3}[ -]/.test(line)) bad.push(line)
        }
      }
      assert.deepStrictEqual(bad.slice(0, 5), [], `malformed replies (seed ${seed})`)
      assert.isAbove(sessions, 40)
      assert.isAbove(replies, sessions * 4, "the sessions got answers, not just timeouts")
      // still serving: a clean session works end to end
      const check = yield* session(gateway.smtpPort, () => 0.99)
      assert.isTrue(check.lines.some((l) => l.startsWith("235 ")), check.lines.join(" | "))
      const heapGrowth = (process.memoryUsage().heapUsed - heapBefore) / 1e6
      assert.isBelow(heapGrowth, 300, `heap grew by ${heapGrowth} MB`)
    }), 60_000)
})

import { monitorEventLoopDelay } from "node:perf_hooks"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import type { ReceivedMessage } from "../../src/domain/Message.ts"
import { defaultMimeLimits, type MimeLimitOptions, scanMime } from "../../src/message/MimeLimits.ts"
import { Parser } from "../../src/message/Parser.ts"
import { parseMail } from "../../src/message/ParseWorker.ts"

const CRLF = "\r\n"
const received = (text: string): ReceivedMessage => {
  const raw = new TextEncoder().encode(text)
  return { raw, size: raw.length, sha256: "" }
}

const multipart = (parts: number) =>
  `From: a@example.test${CRLF}Content-Type: multipart/mixed; boundary="b"${CRLF}${CRLF}` +
  Array.from({ length: parts }, (_, i) => `--b${CRLF}Content-Type: text/plain${CRLF}${CRLF}part ${i}${CRLF}`).join("") +
  `--b--${CRLF}`

const nested = (depth: number) => {
  let text = `From: a@example.test${CRLF}`
  for (let d = 0; d < depth - 1; d++) text += `Content-Type: multipart/mixed; boundary="b${d}"${CRLF}${CRLF}--b${d}${CRLF}`
  text += `Content-Type: text/plain${CRLF}${CRLF}deep${CRLF}`
  for (let d = depth - 2; d >= 0; d--) text += `--b${d}--${CRLF}`
  return text
}

/** The slowest message for mailparser found within the default limits: long quoted-printable lines. */
const quotedPrintable = (bytes: number) =>
  `From: a@example.test${CRLF}Subject: qp${CRLF}Content-Transfer-Encoding: quoted-printable${CRLF}${CRLF}` +
  Array.from({ length: Math.ceil(bytes / 63_000) }, () => "=41".repeat(21_000)).join(CRLF) + CRLF

/** The worst for the event loop found within the default limits: a To field of ~4000 addresses (128 kB). */
const addressFlood = (addresses: number) =>
  `From: a@example.test${CRLF}To: ` +
  Array.from({ length: addresses }, (_, i) => `"n${i}" <u${i}@example.com>`).join(`,${CRLF} `) + `${CRLF}${CRLF}x${CRLF}`

const small: MimeLimitOptions = { maxParts: 5, maxDepth: 3, maxHeaderBytes: 2000, maxHeaders: 10, maxLineLength: 1000 }
const bytes = (text: string) => new TextEncoder().encode(text)

describe("MIME limits", () => {
  it("passes a message within every limit", () => {
    assert.isUndefined(scanMime(bytes(multipart(4)), small).violation)
    assert.isUndefined(scanMime(bytes(nested(3)), small).violation)
  })

  it("reads a header line without a colon as a field of its own, not as the next line's", () => {
    const text = `From: a@example.test${CRLF}Content-Type: multipart/mixed; boundary="b"${CRLF}${CRLF}` +
      `--b${CRLF}no colon here${CRLF}Content-Type: multipart/mixed; boundary="c"${CRLF}${CRLF}--c${CRLF}${CRLF}x${CRLF}--c--${CRLF}--b--${CRLF}`
    // the inner multipart is still seen (depth 3), so a depth limit of 2 refuses the message
    assert.strictEqual(scanMime(bytes(text), { ...small, maxDepth: 2 }).violation?.limit, "depth")
    assert.isUndefined(scanMime(bytes(text), small).violation)
  })

  it("counts MIME parts, the message itself included", () => {
    assert.strictEqual(scanMime(bytes(multipart(5)), small).violation?.limit, "parts")
  })

  it("measures nesting through multiparts and unencoded message/rfc822 parts", () => {
    assert.strictEqual(scanMime(bytes(nested(4)), small).violation?.limit, "depth")
    const rfc822 = `From: a@example.test${CRLF}Content-Type: message/rfc822${CRLF}${CRLF}` +
      `Subject: inner${CRLF}Content-Type: message/rfc822${CRLF}${CRLF}Subject: inner 2${CRLF}Content-Type: message/rfc822${CRLF}${CRLF}x${CRLF}`
    assert.strictEqual(scanMime(bytes(rfc822), small).violation?.limit, "depth")
  })

  it("limits the size and the field count of every header section", () => {
    const big = `From: a@example.test${CRLF}X-Big: ${"v".repeat(900)}${CRLF} ${"v".repeat(900)}${CRLF} ${"v".repeat(900)}${CRLF}${CRLF}x${CRLF}`
    assert.strictEqual(scanMime(bytes(big), small).violation?.limit, "header-size")
    const many = Array.from({ length: 11 }, (_, i) => `X-${i}: v`).join(CRLF) + `${CRLF}${CRLF}x${CRLF}`
    assert.strictEqual(scanMime(bytes(many), small).violation?.limit, "headers")
    const inPart = `Content-Type: multipart/mixed; boundary="b"${CRLF}${CRLF}--b${CRLF}` +
      Array.from({ length: 11 }, (_, i) => `X-${i}: v`).join(CRLF) + `${CRLF}${CRLF}x${CRLF}--b--${CRLF}`
    assert.strictEqual(scanMime(bytes(inPart), small).violation?.limit, "headers")
  })

  it("limits the length of any line, body lines included", () => {
    assert.strictEqual(scanMime(bytes(`Subject: x${CRLF}${CRLF}${"y".repeat(1001)}${CRLF}`), small).violation?.limit, "line-length")
  })
})

describe("Parser against hostile MIME", () => {
  it.live("refuses a message over a MIME limit with 554 5.6.0 naming the limit", () =>
    Effect.gen(function*() {
      const parser = yield* Parser
      const parts = yield* Effect.flip(parser.parse(received(multipart(1000))))
      assert.strictEqual(parts.reply.toString(), "554 5.6.0 Message rejected: more than 1000 MIME parts")
      const depth = yield* Effect.flip(parser.parse(received(nested(11))))
      assert.strictEqual(depth.reply.toString(), "554 5.6.0 Message rejected: MIME parts nested deeper than 10 levels")
      const parsed = yield* parser.parse(received(multipart(100)))
      assert.strictEqual(parsed.text?.startsWith("part 0"), true)
    }).pipe(Effect.provide(Parser.layerWith({ timeout: "10 seconds", limits: defaultMimeLimits }))))

  it.live("gives up at the deadline with 554 5.6.0, and the next message is parsed by a fresh worker", () =>
    Effect.gen(function*() {
      const parser = yield* Parser
      yield* parser.parse(received(multipart(2))) // the pool's worker is up
      const [elapsed, error] = yield* Effect.timed(Effect.flip(parser.parse(received(quotedPrintable(3_000_000)))))
      assert.strictEqual(error.reply.toString(), "554 5.6.0 Message rejected: the message could not be parsed in time")
      assert.isBelow(Duration.toMillis(elapsed), 1000)
      const next = yield* parser.parse(received(multipart(3)))
      assert.strictEqual(next.text?.startsWith("part 0"), true)
    }).pipe(Effect.provide(Parser.layerWith({ timeout: "150 millis", workers: 1 }))))

  it.live("keeps the event loop free while a message that blocks mailparser is parsed", () =>
    Effect.gen(function*() {
      const parser = yield* Parser
      yield* parser.parse(received(multipart(2))) // the worker is up
      const flood = addressFlood(12_000) // three times the default header limit, raised for this test
      const maxDelayDuring = (run: () => Promise<unknown>) =>
        Effect.promise(async () => {
          const monitor = monitorEventLoopDelay({ resolution: 5 })
          monitor.enable()
          await run()
          monitor.disable()
          return monitor.max / 1e6
        })
      // mailparser reads a header in one synchronous run: in place, the loop waits for all of it
      const inPlace = yield* maxDelayDuring(() => parseMail(new TextEncoder().encode(flood)))
      const inWorker = yield* maxDelayDuring(() => Effect.runPromise(parser.parse(received(flood))))
      assert.isAbove(inPlace, 50)
      assert.isBelow(inWorker, inPlace / 2, `event-loop delay ${inWorker} ms in a worker, ${inPlace} ms in place`)
    }).pipe(Effect.provide(Parser.layerWith({ timeout: "30 seconds", limits: { ...defaultMimeLimits, maxHeaderBytes: 1_000_000 } }))))
})

import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema, Stream } from "effect"
import { type AttachmentContent, CanonicalMessage, ReceivedBase64 } from "../../src/domain/Message.ts"
import { jsonBody, streamFromBytes, toHttpBody } from "../../src/delivery/JsonBody.ts"
import { canonical, jsonText } from "./fixtures.ts"

const encodeCanonical = Schema.encodeSync(CanonicalMessage)

const bytes = (n: number, seed = 7) => {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff
  return out
}

const message = (attachments: ReadonlyArray<AttachmentContent>): CanonicalMessage => ({
  ...canonical("0K3F2ABCDEFGHIJKLMN", ["bob@example.net", "\"q\\uote\"@example.net"]),
  // strings JSON must escape, or must not: quotes, control and lone surrogate, line separators, non-ASCII
  from: { address: "alice@example.com", name: "Alice \"A\" Ä" },
  subject: "café ☕ \u0000 \ud800 line\r\nbreak",
  text: "Hi 👋\n",
  headers: [{ name: "X-Test", value: "</script>\u2028" }],
  attachments: attachments.map((content, i) => ({
    filename: `a${i}.bin`,
    content_type: "application/octet-stream",
    size: content instanceof ReceivedBase64 ? content.size : content.byteLength,
    content_id: null,
    disposition: "attachment" as const,
    content_base64: content
  })),
  references: ["<r1@example.com>"]
})

describe("JsonBody", () => {
  it("writes exactly the JSON of the schema's encoding, attachments as base64", () => {
    for (const attachments of [[], [new Uint8Array(0)], [bytes(1), bytes(2), bytes(3)], [bytes(49_153), bytes(300_001, 3)]]) {
      const m = message(attachments)
      assert.strictEqual(jsonText(m), JSON.stringify(encodeCanonical(m)))
    }
  })

  it("writes base64 that arrived as text without its line breaks: the same JSON as for the bytes it stands for", () => {
    for (const size of [0, 1, 2, 3, 57, 200_000]) {
      const content = bytes(size)
      const text = (Buffer.from(content).toString("base64").match(/.{1,76}/g) ?? []).join("\r\n")
      const received = Buffer.from(`Content-Transfer-Encoding: base64\r\n\r\n${text}\r\n--b--\r\n`, "latin1")
      const start = received.indexOf("\r\n\r\n") + 4
      const asText = message([new ReceivedBase64(received, start, start + text.length, size)])
      assert.strictEqual(jsonText(asText), jsonText(message([content])))
      assert.strictEqual(jsonText(asText), JSON.stringify(encodeCanonical(asText)))
      const body = jsonBody(asText)
      const chunks = [...body.chunks()]
      assert.strictEqual(Buffer.concat(chunks).byteLength, body.byteLength)
      for (const chunk of chunks) assert.isAtMost(chunk.byteLength, 64 * 1024)
    }
  })

  it("lays the text out as JSON.stringify does with an indent, for the outbox's files", () => {
    const received = Buffer.from("Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\nAwQF\r\n--b--\r\n", "latin1")
    const asText = new ReceivedBase64(received, 37, 47, 6)
    for (const attachments of [[], [bytes(1)], [bytes(49_153), asText]]) {
      const m = message(attachments)
      const pretty = Buffer.concat([...jsonBody(m, 2).chunks()]).toString("utf8")
      assert.strictEqual(pretty, JSON.stringify(encodeCanonical(m), null, 2))
      assert.strictEqual(Buffer.byteLength(pretty), jsonBody(m, 2).byteLength)
    }
    const value = { a: undefined, b: [undefined, { c: [1, "x\ny"] }, new Uint8Array([255])], d: {}, e: [] }
    assert.strictEqual(Buffer.concat([...jsonBody(value, 4).chunks()]).toString(), JSON.stringify({ ...value, b: [null, { c: [1, "x\ny"] }, "/w=="] }, null, 4))
  })

  it("follows JSON.stringify for undefined, functions, nested arrays and numbers", () => {
    const value = { a: undefined, b: [undefined, () => 1, 1.5e300, -0, [[]]], c: { d: null, e: true }, f: () => 2, g: new Uint8Array([255]) }
    assert.strictEqual(jsonText(value), JSON.stringify({ ...value, g: "/w==" }))
  })

  it("knows its length in bytes before making them", () => {
    const m = message([bytes(100_000), bytes(5)])
    const body = jsonBody(m)
    assert.strictEqual(body.byteLength, Buffer.byteLength(JSON.stringify(encodeCanonical(m)), "utf8"))
  })

  it("makes the bytes afresh for each send, in slices of at most 64 KiB", () => {
    const body = jsonBody(message([bytes(1_000_000)]))
    const first = [...body.chunks()]
    const again = [...body.chunks()]
    assert.isAbove(first.length, 16)
    for (const chunk of first) assert.isAtMost(chunk.byteLength, 64 * 1024)
    assert.isTrue(Buffer.concat(first).equals(Buffer.concat(again)))
    assert.strictEqual(Buffer.concat(first).byteLength, body.byteLength)
  })

  it("sends a small body as one buffer and a large one as a stream of known length", () => {
    const small = toHttpBody(message([bytes(1000)]))
    assert.strictEqual(small._tag, "Uint8Array")
    const large = toHttpBody(message([bytes(streamFromBytes)]))
    assert.strictEqual(large._tag, "Stream")
    if (large._tag !== "Stream") return
    assert.strictEqual(large.contentLength, jsonBody(message([bytes(streamFromBytes)])).byteLength)
    assert.strictEqual(large.contentType, "application/json")
  })

  it.effect("streams a large body one slice per pull, never the whole body at once", () =>
    Effect.gen(function*() {
      const body = toHttpBody(message([bytes(2_000_000)]))
      assert.strictEqual(body._tag, "Stream")
      if (body._tag !== "Stream") return
      const pulls: Array<number> = []
      yield* Stream.runForEachArray(body.stream, (chunks) => Effect.sync(() => pulls.push(chunks.length)))
      assert.isAbove(pulls.length, 40)
      assert.deepStrictEqual(new Set(pulls), new Set([1]))
    }))
})

import { assert, describe, it } from "@effect/vitest"
import { contentCollector, parseMail } from "../../src/message/ParseWorker.ts"
import { withAttachment as messageWithAttachment } from "./fixtures.ts"

/** A message with one base64 attachment of `content`, as the worker gets it. */
const withAttachment = (content: Buffer): Uint8Array => new TextEncoder().encode(messageWithAttachment(content))

const patterned = (size: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * 31 + 7) & 0xff))

describe("ParseWorker", () => {
  it("writes a large attachment in place, in a buffer of exactly its bytes reserved within the message's size", async () => {
    const content = patterned(1024 * 1024)
    const raw = withAttachment(content)
    const { attachments } = await parseMail(raw)
    const bytes = attachments[0]!.content
    assert.isTrue(Buffer.from(bytes).equals(content))
    assert.strictEqual(bytes.byteOffset, 0)
    assert.strictEqual(bytes.buffer.byteLength, content.length) // transferred whole, never copied
    const buffer = bytes.buffer as ArrayBuffer
    assert.isTrue(buffer.resizable)
    assert.isAtMost(buffer.maxByteLength, raw.length)
  })

  it("copies a small attachment into a buffer of its own, which reserves nothing more", async () => {
    const content = patterned(1000)
    const { attachments } = await parseMail(withAttachment(content))
    const bytes = attachments[0]!.content
    assert.isTrue(Buffer.from(bytes).equals(content))
    assert.isFalse((bytes.buffer as ArrayBuffer).resizable)
    assert.strictEqual(bytes.buffer.byteLength, 1000)
  })

  it("keeps every byte that arrives past the collector's bound", () => {
    const collector = contentCollector(4)
    const chunks = [patterned(5), patterned(3), patterned(70_000)]
    for (const chunk of chunks) collector.add(chunk)
    const bytes = collector.done()
    assert.isTrue(Buffer.from(bytes).equals(Buffer.concat(chunks)))
    assert.strictEqual(bytes.buffer.byteLength, bytes.byteLength)
  })
})

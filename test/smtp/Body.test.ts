import * as crypto from "node:crypto"
import { PassThrough } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { sharedFromBytes } from "../../src/message/Parser.ts"
import { readBody } from "../../src/smtp/Body.ts"
import { MessageMemory } from "../../src/smtp/MessageMemory.ts"

/** A share of a MessageMemory that never runs out. */
const plenty = MessageMemory.make(Number.MAX_SAFE_INTEGER).reserve

const feed = (stream: PassThrough, chunks: ReadonlyArray<Buffer>) =>
  Effect.sync(() => {
    for (const chunk of chunks) stream.write(chunk)
    stream.end()
  })

describe("Body", () => {
  it.live("keeps the bytes with their size and SHA-256", () =>
    Effect.gen(function*() {
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 100, yield* plenty))
      yield* feed(stream, [Buffer.from("Subject: a\r\n"), Buffer.from("\r\nbody\r\n")])
      const message = yield* Fiber.join(fiber)
      const expected = Buffer.from("Subject: a\r\n\r\nbody\r\n")
      assert.strictEqual(Buffer.from(message.raw).toString(), expected.toString())
      assert.strictEqual(message.size, expected.length)
      assert.strictEqual(message.sha256, crypto.createHash("sha256").update(expected).digest("hex"))
    }))

  it.live("writes a large message in place into shared memory, a small one into an ordinary buffer", () =>
    Effect.gen(function*() {
      const line = (i: number) => Buffer.from(`line ${i} ${"x".repeat(60)}\r\n`)
      const lines = Array.from({ length: 10_000 }, (_, i) => line(i))
      const expected = Buffer.concat(lines)
      assert.isAbove(expected.length, sharedFromBytes)
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 1_000_000, yield* plenty))
      yield* feed(stream, lines)
      const large = yield* Fiber.join(fiber)
      assert.instanceOf(large.raw.buffer, SharedArrayBuffer)
      assert.strictEqual(large.raw.byteOffset, 0)
      assert.isTrue(Buffer.from(large.raw).equals(expected), "every byte, in order")
      assert.strictEqual(large.size, expected.length)
      assert.strictEqual(large.sha256, crypto.createHash("sha256").update(expected).digest("hex"))

      const small = new PassThrough()
      const smallFiber = yield* Effect.forkChild(readBody(small, 1_000_000, yield* plenty))
      yield* feed(small, lines.slice(0, 10))
      assert.notInstanceOf((yield* Fiber.join(smallFiber)).raw.buffer, SharedArrayBuffer)
    }))

  it.live("accepts a message of exactly the limit", () =>
    Effect.gen(function*() {
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 10, yield* plenty))
      yield* feed(stream, [Buffer.alloc(10, 65)])
      assert.strictEqual((yield* Fiber.join(fiber)).size, 10)
    }))

  it.live("reads an oversize stream to its end, then fails with MessageTooLarge", () =>
    Effect.gen(function*() {
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 1000, yield* plenty))
      const chunk = Buffer.alloc(64 * 1024, 120)
      for (let i = 0; i < 64; i++) stream.write(chunk) // 4 MB, far past the limit
      stream.end()
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag === "Some" ? error.value._tag : undefined, "MessageTooLarge")
      assert.isTrue(stream.readableEnded)
    }))

  it.live("takes every byte it keeps from the message's share, which holds them after the read", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(10_000)
      const share = yield* memory.reserve
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 1000, share))
      yield* feed(stream, [Buffer.from("Subject: a\r\n\r\n"), Buffer.from("body\r\n")])
      const message = yield* Fiber.join(fiber)
      assert.strictEqual(share.bytes(), message.size)
      assert.strictEqual(memory.held(), message.size)
    }))

  it.live("past the process's share it reads to the end, keeps nothing and fails with InsufficientStorage", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(100_000)
      const other = yield* memory.reserve
      other.take(60_000)
      const share = yield* memory.reserve
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 100_000, share))
      yield* feed(stream, Array.from({ length: 50 }, () => Buffer.alloc(1000, 120)))
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.strictEqual(error._tag, "InsufficientStorage")
      assert.strictEqual(error._tag === "InsufficientStorage" ? error.held : undefined, 60_000)
      assert.isTrue(stream.readableEnded, "the rest of the message was read")
      assert.strictEqual(share.bytes(), 0)
      assert.strictEqual(memory.held(), 60_000, "what it had taken is given back at once")
    }))

  it.live("still refuses a message over the size limit as too large once the share has run out", () =>
    Effect.gen(function*() {
      const memory = MessageMemory.make(2000)
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 3000, yield* memory.reserve))
      yield* feed(stream, Array.from({ length: 4 }, () => Buffer.alloc(1000, 120)))
      const error = yield* Effect.flip(Fiber.join(fiber))
      assert.strictEqual(error._tag, "MessageTooLarge")
      assert.strictEqual(memory.held(), 0)
    }))

  it.live("fails at once on a stream that is already destroyed", () =>
    Effect.gen(function*() {
      const stream = new PassThrough()
      stream.destroy()
      const exit = yield* Effect.exit(readBody(stream, 1000, yield* plenty))
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag === "Some" ? error.value._tag : undefined, "BodyInterrupted")
    }))

  it.live("honours smtp-server's sizeExceeded flag", () =>
    Effect.gen(function*() {
      const stream = Object.assign(new PassThrough(), { sizeExceeded: true })
      const fiber = yield* Effect.forkChild(readBody(stream, 1000, yield* plenty))
      yield* feed(stream, [Buffer.from("small")])
      const exit = yield* Fiber.await(fiber)
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag === "Some" ? error.value._tag : undefined, "MessageTooLarge")
    }))

  it.live("fails with BodyInterrupted when the stream is destroyed mid-message", () =>
    Effect.gen(function*() {
      const stream = new PassThrough()
      const fiber = yield* Effect.forkChild(readBody(stream, 1000, yield* plenty))
      yield* Effect.yieldNow
      stream.write(Buffer.from("partial"))
      stream.destroy(new Error("Connection closed before the message was received in full"))
      const exit = yield* Fiber.await(fiber)
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag === "Some" ? error.value._tag : undefined, "BodyInterrupted")
    }))
})

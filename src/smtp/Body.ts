/**
 * Reads the DATA stream smtp-server hands to onData into a `ReceivedMessage` (bytes, size, SHA-256),
 * keeping at most `limit` bytes: past the limit it drains and discards the rest (memory stays flat
 * whatever the client sends), then fails with MessageTooLarge. Each byte kept is first taken from the
 * message's MessageMemory reservation; when the process's share is gone it stops keeping, drains the rest
 * and fails with InsufficientStorage. Bare CR and bare LF are rewritten to CRLF on the way in (and
 * counted), so nothing downstream sees them. It does not parse the message.
 */
import * as crypto from "node:crypto"
import type { Readable } from "node:stream"
import { Effect, Schema } from "effect"
import { MessageTooLarge } from "../domain/Errors.ts"
import type { ReceivedMessage } from "../domain/Message.ts"
import { Replies } from "../domain/Reply.ts"
import { sharedFromBytes } from "../message/Parser.ts"
import type { InsufficientStorage, Reservation } from "./MessageMemory.ts"

/** The client went away (or the stream broke) before the final dot: a temporary failure, if anyone still listens. */
export class BodyInterrupted extends Schema.TaggedError<BodyInterrupted>()("BodyInterrupted", {
  detail: Schema.String
}) {
  get reply() {
    return Replies.internalError
  }
}

/** smtp-server's data stream: a Readable that also counts bytes against its `size` option. */
export interface DataStream extends Readable {
  readonly sizeExceeded?: boolean
  /** The bytes received for this message so far. */
  readonly byteLength?: number
}

const CRLF = Buffer.from("\r\n")

/**
 * Rewrites bare CR and bare LF to CRLF, chunk by chunk (a CR at the end of a chunk waits for the
 * next one). `push` gets the output; `bare` counts the line endings rewritten. After the last chunk,
 * `end()` flushes a trailing CR.
 */
const makeLineEndingNormalizer = (push: (chunk: Buffer) => void) => {
  let pendingCR = false
  let bare = 0
  const write = (chunk: Buffer): void => {
    let start = 0
    let i = 0
    if (pendingCR) {
      pendingCR = false
      push(CRLF)
      if (chunk.length > 0 && chunk[0] === 0x0a) {
        start = i = 1
      } else {
        bare++
      }
    }
    for (; i < chunk.length; i++) {
      const byte = chunk[i]
      if (byte === 0x0d) {
        if (i === chunk.length - 1) {
          if (i > start) push(chunk.subarray(start, i))
          pendingCR = true
          return
        }
        if (chunk[i + 1] === 0x0a) {
          i++ // a proper CRLF
          continue
        }
        if (i > start) push(chunk.subarray(start, i))
        push(CRLF)
        bare++
        start = i + 1
      } else if (byte === 0x0a) {
        // a CRLF is skipped above, so this LF has no CR before it
        if (i > start) push(chunk.subarray(start, i))
        push(CRLF)
        bare++
        start = i + 1
      }
    }
    if (start < chunk.length) push(start === 0 ? chunk : chunk.subarray(start))
  }
  const end = (): void => {
    if (!pendingCR) return
    pendingCR = false
    push(CRLF)
    bare++
  }
  return { write, end, bareLineEndings: () => bare }
}

/**
 * Where a message's bytes go as they arrive (at most `limit`): a list of chunks while the message is
 * small; from Parser's `sharedFromBytes` on, one SharedArrayBuffer of `limit` bytes reserved at once and
 * written in place. The OS backs only the pages written, so a message costs its own size, once: it is
 * never copied into a second buffer at the end, and the parse worker reads it without a copy.
 */
const makeAccumulator = (limit: number) => {
  let chunks: Array<Buffer> = []
  let shared: Buffer | undefined
  let size = 0
  return {
    get size() {
      return size
    },
    /** The caller keeps `size + chunk.length` within `limit`. */
    push(chunk: Buffer): void {
      if (shared === undefined && size + chunk.length >= sharedFromBytes) {
        shared = Buffer.from(new SharedArrayBuffer(limit))
        let offset = 0
        for (const held of chunks) offset += held.copy(shared, offset)
        chunks = []
      }
      if (shared === undefined) chunks.push(chunk)
      else chunk.copy(shared, size)
      size += chunk.length
    },
    bytes(): Uint8Array {
      const out = shared === undefined ? Buffer.concat(chunks, size) : shared.subarray(0, size)
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
    },
    clear(): void {
      chunks = []
      shared = undefined
    }
  }
}

/** A received message, and how many bare CR or LF it had (rewritten to CRLF in `raw`). */
export interface NormalizedMessage extends ReceivedMessage {
  readonly bareLineEndings: number
}

export const readBody = (
  stream: DataStream,
  limit: number,
  memory: Reservation
): Effect.Effect<NormalizedMessage, MessageTooLarge | InsufficientStorage | BodyInterrupted> =>
  Effect.callback<NormalizedMessage, MessageTooLarge | InsufficientStorage | BodyInterrupted>((resume) => {
    if (stream.destroyed) {
      return resume(Effect.fail(new BodyInterrupted({ detail: "the stream was closed before the message was read" })))
    }
    const received = makeAccumulator(limit)
    const hash = crypto.createHash("sha256")
    let size = 0
    let over = false
    let refused: InsufficientStorage | undefined
    const keepNothing = () => {
      received.clear()
      memory.release()
    }
    const normalizer = makeLineEndingNormalizer((chunk) => {
      if (over) return
      size += chunk.length
      if (size > limit) {
        over = true
        keepNothing()
        return
      }
      if (refused !== undefined) return // still counted: a message too large is refused as such
      if (!memory.take(chunk.length)) {
        refused = memory.refusal(size)
        keepNothing()
        return
      }
      received.push(chunk)
      hash.update(chunk)
    })
    const onData = (chunk: Buffer) => {
      if (!over) normalizer.write(chunk)
    }
    const cleanup = () => {
      stream.off("data", onData)
      stream.off("end", onEnd)
      stream.off("error", onError)
      stream.off("close", onClose)
    }
    const onEnd = () => {
      cleanup()
      normalizer.end()
      if (over || stream.sizeExceeded === true) return resume(Effect.fail(new MessageTooLarge({ limit })))
      if (refused !== undefined) return resume(Effect.fail(refused))
      const raw = received.bytes()
      received.clear()
      resume(Effect.succeed({
        raw,
        size: raw.byteLength,
        sha256: hash.digest("hex"),
        bareLineEndings: normalizer.bareLineEndings()
      }))
    }
    const onError = (error: Error) => {
      cleanup()
      resume(Effect.fail(new BodyInterrupted({ detail: error.message })))
    }
    const onClose = () => {
      cleanup()
      resume(Effect.fail(new BodyInterrupted({ detail: "the stream closed before the end of the message" })))
    }
    stream.on("data", onData)
    stream.once("end", onEnd)
    stream.once("error", onError)
    stream.once("close", onClose)
    // interrupted (shutdown): stop keeping bytes, let whatever is left drain into nothing
    return Effect.sync(() => {
      cleanup()
      received.clear()
      stream.resume()
    })
  })

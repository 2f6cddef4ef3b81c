/**
 * Reads the DATA stream smtp-server hands to onData into a `ReceivedMessage` (bytes, size, SHA-256),
 * keeping at most `limit` bytes: past the limit it drains and discards the rest (memory stays flat
 * whatever the client sends), then fails with MessageTooLarge. Bare CR and bare LF are rewritten to
 * CRLF on the way in (and counted), so nothing downstream sees them. It does not parse the message.
 */
import * as crypto from "node:crypto"
import type { Readable } from "node:stream"
import { Effect, Schema } from "effect"
import { MessageTooLarge } from "../domain/Errors.ts"
import type { ReceivedMessage } from "../domain/Message.ts"
import { Replies } from "../domain/Reply.ts"
import { sharedFromBytes } from "../message/Parser.ts"

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
}

const CRLF = Buffer.from("\r\n")

/**
 * Rewrites bare CR and bare LF to CRLF, chunk by chunk (a CR at the end of a chunk waits for the
 * next one). `push` gets the output; `bare` counts the line endings rewritten. After the last chunk,
 * `end()` flushes a trailing CR.
 */
export const makeLineEndingNormalizer = (push: (chunk: Buffer) => void) => {
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
 * The chunks as one Buffer: from Parser's `sharedFromBytes` on in a SharedArrayBuffer, which the parse
 * worker reads without a copy; else an ordinary one.
 */
const joinChunks = (chunks: ReadonlyArray<Buffer>, size: number): Buffer => {
  if (size < sharedFromBytes) return Buffer.concat(chunks, size)
  const out = Buffer.from(new SharedArrayBuffer(size))
  let offset = 0
  for (const chunk of chunks) offset += chunk.copy(out, offset)
  return out
}

/** A received message, and how many bare CR or LF it had (rewritten to CRLF in `raw`). */
export interface NormalizedMessage extends ReceivedMessage {
  readonly bareLineEndings: number
}

export const readBody = (
  stream: DataStream,
  limit: number
): Effect.Effect<NormalizedMessage, MessageTooLarge | BodyInterrupted> =>
  Effect.callback<NormalizedMessage, MessageTooLarge | BodyInterrupted>((resume) => {
    if (stream.destroyed) {
      return resume(Effect.fail(new BodyInterrupted({ detail: "the stream was closed before the message was read" })))
    }
    const chunks: Array<Buffer> = []
    const hash = crypto.createHash("sha256")
    let size = 0
    let over = false
    const normalizer = makeLineEndingNormalizer((chunk) => {
      if (over) return
      if (size + chunk.length > limit) {
        over = true
        chunks.length = 0
        return
      }
      size += chunk.length
      chunks.push(chunk)
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
      const raw = joinChunks(chunks, size)
      chunks.length = 0
      resume(Effect.succeed({
        raw: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength),
        size,
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
      chunks.length = 0
      stream.resume()
    })
  })

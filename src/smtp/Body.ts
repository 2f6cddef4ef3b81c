/**
 * Reads the DATA stream smtp-server hands to onData into a `ReceivedMessage` (bytes, size, SHA-256),
 * keeping at most `limit` bytes: past the limit it drains and discards the rest (memory stays flat
 * whatever the client sends), then fails with MessageTooLarge. It does not parse the message.
 */
import * as crypto from "node:crypto"
import type { Readable } from "node:stream"
import { Effect, Schema } from "effect"
import { MessageTooLarge } from "../domain/Errors.ts"
import type { ReceivedMessage } from "../domain/Message.ts"
import { Replies } from "../domain/Reply.ts"

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

export const readBody = (
  stream: DataStream,
  limit: number
): Effect.Effect<ReceivedMessage, MessageTooLarge | BodyInterrupted> =>
  Effect.callback<ReceivedMessage, MessageTooLarge | BodyInterrupted>((resume) => {
    if (stream.destroyed) {
      return resume(Effect.fail(new BodyInterrupted({ detail: "the stream was closed before the message was read" })))
    }
    const chunks: Array<Buffer> = []
    const hash = crypto.createHash("sha256")
    let size = 0
    let over = false
    const onData = (chunk: Buffer) => {
      if (over) return
      if (size + chunk.length > limit) {
        over = true
        chunks.length = 0
        return
      }
      size += chunk.length
      chunks.push(chunk)
      hash.update(chunk)
    }
    const cleanup = () => {
      stream.off("data", onData)
      stream.off("end", onEnd)
      stream.off("error", onError)
      stream.off("close", onClose)
    }
    const onEnd = () => {
      cleanup()
      if (over || stream.sizeExceeded === true) return resume(Effect.fail(new MessageTooLarge({ limit })))
      const raw = Buffer.concat(chunks, size)
      resume(Effect.succeed({ raw: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), size, sha256: hash.digest("hex") }))
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

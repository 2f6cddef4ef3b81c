/**
 * MessageMemory: the bytes of messages the process holds at once, across every session, kept within
 * MAX_MESSAGE_MEMORY. A message takes bytes as they arrive (Body.ts) and gives them all back when its
 * transaction ends, delivered or not. A message that would pass the limit is read to its end, kept
 * nowhere, and refused with `452 4.3.1`: the client retries once other messages have gone. A client
 * that declares SIZE= at MAIL larger than what is free then gets that reply at MAIL.
 * Without it, every connection could hold a message of MAX_MESSAGE_SIZE at once, and a few clients
 * sending large attachments together could take the process past its memory limit.
 */
import { Context, Effect, Layer, Metric, Schema, type Scope } from "effect"
import { GatewayConfig } from "../Config.ts"
import { Replies } from "../domain/Reply.ts"
import { messageMemory } from "../observability/Metrics.ts"

/** MAX_MESSAGE_MEMORY is taken: `452 4.3.1`, try again later. */
export class InsufficientStorage extends Schema.TaggedError<InsufficientStorage>()("InsufficientStorage", {
  /** Bytes the message needed (declared, or received so far). */
  needed: Schema.Number,
  /** Bytes other messages held then. */
  held: Schema.Number,
  limit: Schema.Number
}) {
  get reply() {
    return Replies.insufficientStorage
  }
}

/** One message's share. */
export interface Reservation {
  /** Takes `bytes` more; false, taking nothing, when that would pass the limit. */
  readonly take: (bytes: number) => boolean
  /** Gives back everything taken so far (again: nothing). */
  readonly release: () => void
  /** The bytes taken now. */
  readonly bytes: () => number
  /** The refusal for a `take` that failed: what the message needed and what the others held. */
  readonly refusal: (needed: number) => InsufficientStorage
}

export class MessageMemory extends Context.Service<MessageMemory, {
  /** Bytes held now, by every message. */
  readonly held: () => number
  /** A share for one message, given back when the scope closes. */
  readonly reserve: Effect.Effect<Reservation, never, Scope.Scope>
  /** Fails with InsufficientStorage when `bytes` more would pass the limit now (SIZE= at MAIL). */
  readonly checkFree: (bytes: number) => Effect.Effect<void, InsufficientStorage>
  /** Sets `smtp_message_memory_bytes` to what is held now. */
  readonly report: Effect.Effect<void>
}>()("smtp-gateway/smtp/MessageMemory") {
  static readonly make = (limit: number) => {
    let held = 0
    const report = Effect.suspend(() => Metric.update(messageMemory, held))
    const open = (): Reservation => {
      let mine = 0
      return {
        take: (bytes) => {
          if (held + bytes > limit) return false
          held += bytes
          mine += bytes
          return true
        },
        release: () => {
          held -= mine
          mine = 0
        },
        bytes: () => mine,
        refusal: (needed) => new InsufficientStorage({ needed, held: held - mine, limit })
      }
    }
    return MessageMemory.of({
      held: () => held,
      reserve: Effect.acquireRelease(Effect.sync(open), (reservation) =>
        Effect.andThen(Effect.sync(reservation.release), report)),
      checkFree: (bytes) =>
        held + bytes > limit ? Effect.fail(new InsufficientStorage({ needed: bytes, held, limit })) : Effect.void,
      report
    })
  }

  /** MAX_MESSAGE_MEMORY from GatewayConfig. */
  static readonly layer = Layer.effect(
    MessageMemory,
    Effect.gen(function*() {
      const { limits } = yield* GatewayConfig
      return MessageMemory.make(limits.maxMessageMemory)
    })
  )
}

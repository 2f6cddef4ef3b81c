/**
 * Delivery: hands one accepted message to the Upstream and says what became of every recipient.
 * Per-attempt timeout inside the whole-delivery deadline; fans out per recipient for upstreams that
 * take one recipient per call. (Retries, circuit breaker and the duplicate window plug in here.)
 *
 * CONTRACT (lead): the shape and error below are shared; the helper that owns delivery/ writes the layer.
 */
import { Context, Effect, Schema } from "effect"
import type { Mailbox } from "../domain/Address.ts"
import type { CanonicalMessage, ReceivedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"

export interface DeliveryRequest {
  readonly id: string
  readonly message: CanonicalMessage
  readonly received: ReceivedMessage
  /** The message as it travels on (Bcc removed, Received added). */
  readonly raw: Uint8Array
  readonly principal: Principal
  readonly recipients: ReadonlyArray<Mailbox>
}

export interface DeliveryReceipt {
  /** Every recipient the upstream accepted, with the upstream's id. */
  readonly accepted: ReadonlyArray<{ readonly recipient: Mailbox; readonly upstreamId: string }>
  /** Recipients refused for good while others were accepted (design.md §2 partial outcome). */
  readonly refused: ReadonlyArray<{ readonly recipient: Mailbox; readonly reason: string }>
}

/** Nothing was delivered for good: the reply tells the client whether to retry. */
export class DeliveryError extends Schema.TaggedError<DeliveryError>()("DeliveryError", {
  kind: Schema.Literals(["Temporary", "Timeout", "Unavailable", "RateLimited", "Rejected", "TooLarge", "Unauthorized"]),
  /** Short and safe for the client. */
  detail: Schema.String,
  retryAfterMillis: Schema.optional(Schema.Number)
}) {
  get reply() {
    switch (this.kind) {
      case "Temporary":
      case "Unavailable":
        return Replies.upstreamTemporary
      case "Timeout":
        return Replies.upstreamTimeout
      case "RateLimited":
        return Replies.rateLimited((this.retryAfterMillis ?? 1000) / 1000)
      case "Rejected":
        return Replies.upstreamRejected(this.detail)
      case "TooLarge":
        return Replies.upstreamTooLarge
      case "Unauthorized":
        return Replies.upstreamSenderRefused
    }
  }
}

export class Delivery extends Context.Service<Delivery, {
  readonly deliver: (request: DeliveryRequest) => Effect.Effect<DeliveryReceipt, DeliveryError>
}>()("smtp-gateway/delivery/Delivery") {}

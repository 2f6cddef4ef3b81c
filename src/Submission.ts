/**
 * Submission: the DATA-phase path in one readable Effect.fn:
 * parse → validate → transform → deliver → Reply.
 *
 * CONTRACT (lead): the service shape is shared with smtp/; the lead writes the layer.
 */
import { Context, Effect } from "effect"
import type { Envelope, SessionInfo } from "./domain/Envelope.ts"
import type { MessageRejected, MessageTooLarge, SenderRejected } from "./domain/Errors.ts"
import type { ReceivedMessage } from "./domain/Message.ts"
import type { Principal } from "./domain/Principal.ts"
import type { Reply } from "./domain/Reply.ts"
import type { DeliveryError } from "./delivery/Delivery.ts"

export interface SubmissionInput {
  readonly session: SessionInfo
  readonly principal: Principal
  readonly envelope: Envelope
  readonly message: ReceivedMessage
}

export type SubmissionError = SenderRejected | MessageRejected | MessageTooLarge | DeliveryError

export class Submission extends Context.Service<Submission, {
  /** Succeeds with the reply to send after the final dot (`250 ...`, possibly naming refused recipients). */
  readonly submit: (input: SubmissionInput) => Effect.Effect<Reply, SubmissionError>
}>()("smtp-gateway/Submission") {}

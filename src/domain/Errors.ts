/**
 * Refusals that more than one stage can raise, each knowing the reply it earns. Errors that belong
 * to one service (AuthError, DeliveryError, ...) live in that service's file.
 */
import { Schema } from "effect"
import { Replies } from "./Reply.ts"

/** The sender (MAIL FROM, or the From header after DATA) is not one this principal may use. */
export class SenderRejected extends Schema.TaggedError<SenderRejected>()("SenderRejected", {
  address: Schema.String,
  where: Schema.Literals(["mail-from", "from-header"])
}) {
  get reply() {
    return Replies.senderNotAllowed
  }
}

/** Declared (SIZE=) or streamed size over MAX_MESSAGE_SIZE. */
export class MessageTooLarge extends Schema.TaggedError<MessageTooLarge>()("MessageTooLarge", {
  limit: Schema.Int
}) {
  get reply() {
    return Replies.messageTooLarge(this.limit)
  }
}

/** The message cannot be parsed, or breaks a rule the gateway enforces. `reason` reaches the client. */
export class MessageRejected extends Schema.TaggedError<MessageRejected>()("MessageRejected", {
  reason: Schema.String
}) {
  get reply() {
    return Replies.messageRejected(this.reason)
  }
}

/** A path (MAIL FROM or RCPT TO) that is not a valid address. */
export class BadAddress extends Schema.TaggedError<BadAddress>()("BadAddress", {
  address: Schema.String
}) {
  get reply() {
    return Replies.badAddress
  }
}

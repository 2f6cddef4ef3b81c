/**
 * EnvelopePolicy: everything that can be decided before DATA. At MAIL: the sender must be one the
 * principal may use, and a declared SIZE must fit. At RCPT: the recipient count. Rate limits and
 * recipient rules of the hardening work plug in here. Holds no protocol state of its own.
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import { GatewayConfig } from "../Config.ts"
import type { Mailbox } from "../domain/Address.ts"
import type { Envelope } from "../domain/Envelope.ts"
import { MessageTooLarge, SenderRejected } from "../domain/Errors.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"
import { Senders, type SendersUnavailable } from "./Senders.ts"

export class TooManyRecipients extends Schema.TaggedError<TooManyRecipients>()("TooManyRecipients", {
  limit: Schema.Int
}) {
  get reply() {
    return Replies.tooManyRecipients
  }
}

export class EnvelopePolicy extends Context.Service<EnvelopePolicy, {
  readonly checkSender: (
    principal: Principal,
    sender: Mailbox,
    declaredSize: Option.Option<number>
  ) => Effect.Effect<void, SenderRejected | MessageTooLarge | SendersUnavailable>
  /** `envelope` is the transaction so far, without `recipient`. */
  readonly checkRecipient: (
    principal: Principal,
    envelope: Envelope,
    recipient: Mailbox
  ) => Effect.Effect<void, TooManyRecipients>
}>()("smtp-gateway/policy/EnvelopePolicy") {
  static readonly layerNoDeps = Layer.effect(
    EnvelopePolicy,
    Effect.gen(function*() {
      const { limits } = yield* GatewayConfig
      const senders = yield* Senders
      return EnvelopePolicy.of({
        checkSender: Effect.fnUntraced(function*(principal, sender, declaredSize) {
          if (Option.isSome(declaredSize) && declaredSize.value > limits.maxMessageSize) {
            return yield* new MessageTooLarge({ limit: limits.maxMessageSize })
          }
          if (!(yield* senders.allowed(principal, sender))) {
            return yield* new SenderRejected({ address: sender, where: "mail-from" })
          }
        }),
        checkRecipient: Effect.fnUntraced(function*(_principal, envelope, _recipient) {
          if (envelope.rcptTo.length >= limits.maxRecipients) {
            return yield* new TooManyRecipients({ limit: limits.maxRecipients })
          }
        })
      })
    })
  )
  static readonly layer = this.layerNoDeps.pipe(Layer.provide([GatewayConfig.layer, Senders.layerPrincipal]))
}

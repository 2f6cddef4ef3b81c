/**
 * Validator: the rules a parsed message must meet before it travels on. Exactly one From address, a
 * valid one, that the principal may send as (asked of the Senders service). It reads the parsed
 * message only; it changes nothing (message/Transform.ts does).
 */
import { Context, Effect, Layer, Option } from "effect"
import { decodeMailbox } from "../domain/Address.ts"
import { MessageRejected, SenderRejected } from "../domain/Errors.ts"
import type { ParsedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"
import { Senders, type SendersUnavailable } from "../policy/Senders.ts"

export class Validator extends Context.Service<Validator, {
  readonly validate: (
    parsed: ParsedMessage,
    principal: Principal
  ) => Effect.Effect<void, SenderRejected | MessageRejected | SendersUnavailable>
}>()("smtp-gateway/message/Validator") {
  /** Needs the Senders service of the configured auth backend. */
  static readonly layerNoDeps = Layer.effect(
    Validator,
    Effect.gen(function*() {
      const senders = yield* Senders
      const validate = Effect.fnUntraced(function*(parsed: ParsedMessage, principal: Principal) {
        const [from, ...others] = parsed.from
        if (from === undefined) return yield* new MessageRejected({ reason: "the message has no From address" })
        if (others.length > 0) {
          return yield* new MessageRejected({ reason: "the message has more than one From address" })
        }
        if (Option.isNone(decodeMailbox(from.address))) {
          return yield* new MessageRejected({ reason: "the From address is not valid" })
        }
        if (!(yield* senders.allowed(principal, from.address))) {
          return yield* new SenderRejected({ address: from.address, where: "from-header" })
        }
      })
      return Validator.of({ validate })
    })
  )

  /** Answers from the principal's own sender rules (Senders.layerPrincipal). */
  static readonly layer = this.layerNoDeps.pipe(Layer.provide(Senders.layerPrincipal))
}

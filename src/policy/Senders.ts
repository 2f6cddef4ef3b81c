/**
 * Senders: may this principal send as this address? Asked at MAIL (envelope sender) and after DATA
 * (From header). The default answers from the principal's own sender rules; a backend whose senders
 * live at an API (Cakemail) provides its own, cached, that refreshes once on a miss.
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import { senderAllowed } from "../domain/Address.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"

/** The sender list could not be fetched: the client should retry (451 4.3.0). */
export class SendersUnavailable extends Schema.TaggedError<SendersUnavailable>()("SendersUnavailable", {
  detail: Schema.String
}) {
  get reply() {
    return Replies.upstreamTemporary
  }
}

/** True when the principal's own rules allow `address` (no rules: the upstream API decides). */
const principalMaySendAs = (principal: Principal, address: string): boolean =>
  Option.match(principal.senders, { onNone: () => true, onSome: (rules) => senderAllowed(rules, address) })

export class Senders extends Context.Service<Senders, {
  readonly allowed: (principal: Principal, address: string) => Effect.Effect<boolean, SendersUnavailable>
}>()("smtp-gateway/policy/Senders") {
  /** Answers from `principal.senders`. */
  static readonly layerPrincipal = Layer.succeed(
    Senders,
    Senders.of({ allowed: (principal, address) => Effect.succeed(principalMaySendAs(principal, address)) })
  )
}

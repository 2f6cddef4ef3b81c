/**
 * EnvelopePolicy: everything that can be decided before DATA. At MAIL: the sender must be one the
 * principal may use, and the message rates (per client IP, per account; policy/Limits.ts) must allow
 * one more (a declared SIZE over the limit is smtp-server's to refuse, before MAIL reaches policy). At RCPT: routing forms refused (address literals, local
 * domains, `%` and `!`), then the recipient count. Holds no protocol state of its own.
 */
import * as net from "node:net"
import { Context, Effect, Layer, Option, Schema } from "effect"
import { GatewayConfig } from "../Config.ts"
import type { Mailbox } from "../domain/Address.ts"
import type { Envelope } from "../domain/Envelope.ts"
import { SenderRejected } from "../domain/Errors.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"
import { Limits, type RateLimited } from "./Limits.ts"
import { Senders, type SendersUnavailable } from "./Senders.ts"

export class TooManyRecipients extends Schema.TaggedError<TooManyRecipients>()("TooManyRecipients", {
  limit: Schema.Int
}) {
  get reply() {
    return Replies.tooManyRecipients
  }
}

/** A recipient whose form the gateway never relays to (`550 5.1.2` / `550 5.1.3`). */
export class RecipientRejected extends Schema.TaggedError<RecipientRejected>()("RecipientRejected", {
  rule: Schema.Literals(["address-literal", "local-domain", "routing"])
}) {
  get reply() {
    switch (this.rule) {
      case "address-literal":
        return Replies.recipientAddressLiteral
      case "local-domain":
        return Replies.recipientLocalDomain
      case "routing":
        return Replies.recipientRouting
    }
  }
}

/**
 * The rule a recipient path (as the client wrote it, before syntax checks) breaks, if any:
 * an address literal (`bob@[192.0.2.1]`, or a domain that is an IP address), `localhost` and other
 * local names (a single label, `*.localhost`, `*.local`, `*.localdomain`), or `%`/`!` routing.
 */
export const recipientRule = (address: string): Option.Option<RecipientRejected["rule"]> => {
  const at = address.lastIndexOf("@")
  const local = at < 0 ? address : address.slice(0, at)
  const domain = at < 0 ? "" : address.slice(at + 1).toLowerCase().replace(/\.$/, "")
  if (domain.startsWith("[") || net.isIP(domain) !== 0) return Option.some("address-literal")
  if (at >= 0 && (!domain.includes(".") || /\.(localhost|local|localdomain)$/.test(domain))) {
    return Option.some("local-domain")
  }
  if (/[%!]/.test(local)) return Option.some("routing")
  return Option.none()
}

export class EnvelopePolicy extends Context.Service<EnvelopePolicy, {
  readonly checkSender: (principal: Principal, sender: Mailbox) => Effect.Effect<void, SenderRejected | SendersUnavailable>
  /** One more message from `client` (its IP address) as `principal`: RATE_LIMIT_PER_IP and RATE_LIMIT_PER_USER. */
  readonly checkRate: (client: string, principal: Principal) => Effect.Effect<void, RateLimited>
  /** The recipient path as the client wrote it, before its syntax is checked (so `bob@localhost` earns 550, not 501). */
  readonly checkRecipientAddress: (address: string) => Effect.Effect<void, RecipientRejected>
  /** One more recipient for `envelope`, the transaction so far: MAX_RECIPIENTS. */
  readonly checkRecipientCount: (envelope: Envelope) => Effect.Effect<void, TooManyRecipients>
}>()("smtp-gateway/policy/EnvelopePolicy") {
  static readonly layerNoDeps = Layer.effect(
    EnvelopePolicy,
    Effect.gen(function*() {
      const { limits } = yield* GatewayConfig
      const senders = yield* Senders
      const rates = yield* Limits
      return EnvelopePolicy.of({
        checkSender: Effect.fnUntraced(function*(principal, sender) {
          if (!(yield* senders.allowed(principal, sender))) {
            return yield* new SenderRejected({ address: sender, where: "mail-from" })
          }
        }),
        checkRate: (client, principal) => rates.consumeMessage(client, principal.username),
        checkRecipientAddress: (address) =>
          Option.match(recipientRule(address), {
            onNone: () => Effect.void,
            onSome: (rule) => Effect.fail(new RecipientRejected({ rule }))
          }),
        checkRecipientCount: Effect.fnUntraced(function*(envelope) {
          if (envelope.rcptTo.length >= limits.maxRecipients) {
            return yield* new TooManyRecipients({ limit: limits.maxRecipients })
          }
        })
      })
    })
  )
}

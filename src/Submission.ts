/**
 * Submission: the DATA-phase path in one readable Effect.fn:
 * parse → validate → transform → deliver → Reply.
 * It answers `250` only once the upstream has accepted the message; every failure is a typed error
 * that carries its own reply.
 */
import * as crypto from "node:crypto"
import { Clock, Context, DateTime, Duration, Effect, Layer, Metric, Option } from "effect"
import { GatewayConfig } from "./Config.ts"
import { Authenticator } from "./auth/Authenticator.ts"
import { Delivery, type DeliveryError, type DeliveryReceipt } from "./delivery/Delivery.ts"
import type { Envelope, SessionInfo } from "./domain/Envelope.ts"
import type { MessageRejected, MessageTooLarge, SenderRejected } from "./domain/Errors.ts"
import type { ReceivedMessage } from "./domain/Message.ts"
import type { Credentials, Principal } from "./domain/Principal.ts"
import { type Reply, Replies } from "./domain/Reply.ts"
import { Parser } from "./message/Parser.ts"
import { deliveryRaw, toCanonical } from "./message/Transform.ts"
import { Validator } from "./message/Validator.ts"
import { emailsForwarded, processingDuration } from "./observability/Metrics.ts"
import type { SendersUnavailable } from "./policy/Senders.ts"

export interface SubmissionInput {
  readonly session: SessionInfo
  readonly principal: Principal
  /** What the client logged in with, to log in again once if the email API refuses an expired token. */
  readonly credentials: Option.Option<Credentials>
  readonly envelope: Envelope
  readonly message: ReceivedMessage
}

export type SubmissionError = SenderRejected | MessageRejected | MessageTooLarge | SendersUnavailable | DeliveryError

/** A gateway id: time-ordered (base36 milliseconds) then 10 random characters; fits a file name. */
const makeGatewayId = (millis: number): string =>
  (millis.toString(36).padStart(9, "0") + randomBytes8().readBigUInt64BE().toString(36).padStart(13, "0").slice(-10))
    .toUpperCase()

/** 8 random bytes from a pool filled 512 ids at a time (one randomFillSync call instead of one per message). */
const randomPool = Buffer.alloc(4096)
let randomOffset = randomPool.length
const randomBytes8 = (): Buffer => {
  if (randomOffset + 8 > randomPool.length) {
    crypto.randomFillSync(randomPool)
    randomOffset = 0
  }
  randomOffset += 8
  return randomPool.subarray(randomOffset - 8, randomOffset)
}

const countForwarded = (result: string) => Metric.update(Metric.withAttributes(emailsForwarded, { result }), 1)
// one metric update per result, made once (not one withAttributes per message)
const forwardedBy = {
  accepted: countForwarded("accepted"),
  partial: countForwarded("partial"),
  rejected: countForwarded("rejected"),
  temporary_failure: countForwarded("temporary_failure"),
  duplicate: countForwarded("duplicate")
}

export class Submission extends Context.Service<Submission, {
  /** Succeeds with the reply to send after the final dot (`250 ...`, naming refused recipients if any). */
  readonly submit: (input: SubmissionInput) => Effect.Effect<Reply, SubmissionError>
}>()("smtp-gateway/Submission") {
  static readonly layer = Layer.effect(
    Submission,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const parser = yield* Parser
      const validator = yield* Validator
      const delivery = yield* Delivery
      const authenticator = yield* Authenticator

      /**
       * The email API refused the principal's key (401/403): it leaves the auth cache. A Cakemail token
       * refused with 401 has expired or been revoked: log in again once with the session's credentials
       * (a refresh, or the password grant) and deliver again; recipients already accepted are skipped by
       * the duplicate window. Anything else stays the refusal it was (550 5.7.1).
       */
      const onUnauthorized = (
        error: DeliveryError,
        principal: Principal,
        credentials: Option.Option<Credentials>,
        deliverAs: (principal: Principal) => Effect.Effect<DeliveryReceipt, DeliveryError>
      ) =>
        Effect.gen(function*() {
          yield* authenticator.invalidate(principal)
          if (error.status !== 401 || principal.backend !== "cakemail" || Option.isNone(credentials)) {
            return yield* error
          }
          const renewed = yield* authenticator.verify(credentials.value).pipe(Effect.mapError(() => error))
          yield* Effect.logInfo("the email API refused the token; delivering again once with a new one")
          return yield* deliverAs(renewed)
        })

      const submit = Effect.fnUntraced(
        function*({ credentials, envelope, message, principal, session }: SubmissionInput) {
          const started = yield* Clock.currentTimeMillis
          const parsed = yield* parser.parse(message)
          yield* validator.validate(parsed, principal)

          const id = makeGatewayId(started)
          const receivedAt = DateTime.formatIso(yield* DateTime.now)
          const context = { id, receivedAt, principal, envelope, session, hostname: config.smtp.hostname }
          // on the caller's span (smtp.data): the id that ties the trace to the logs and the client's reply
          yield* Effect.annotateCurrentSpan({ "smtp.gateway_id": id })

          const fields = {
            id,
            sessionId: session.id,
            startedAt: started,
            messageId: parsed.messageId,
            message: toCanonical(parsed, context),
            received: message,
            recipients: envelope.rcptTo
          }
          // the delivered bytes (the edited header fields, then a view of the body): made only when an
          // upstream reads them (the outbox), once
          let delivered: ReadonlyArray<Uint8Array> | undefined
          const deliveredRaw = () => (delivered ??= deliveryRaw(message.raw, context))
          const deliverAs = (as: Principal): Effect.Effect<DeliveryReceipt, DeliveryError> =>
            delivery.deliver({
              ...fields,
              principal: as,
              get raw() {
                return deliveredRaw()
              }
            })
          const receipt = yield* deliverAs(principal).pipe(
            Effect.catchIf(
              (error) => error.kind === "Unauthorized",
              (error) => onUnauthorized(error, principal, credentials, deliverAs)
            ),
            Effect.onInterrupt(() =>
              Effect.logInfo("the client left before the reply; the delivery goes on").pipe(
                Effect.annotateLogs({ gateway_id: id })
              )
            )
          )
          if (receipt.duplicate) {
            yield* Effect.logInfo("message already delivered: a client retry gets the original answer").pipe(
              Effect.annotateLogs({ gateway_id: id, original_gateway_id: receipt.gatewayId })
            )
            yield* forwardedBy.duplicate
            return Replies.accepted(receipt.gatewayId)
          }
          if (receipt.refused.length > 0) {
            yield* Effect.logWarning("some recipients were refused by the email API").pipe(
              Effect.annotateLogs({
                gateway_id: id,
                accepted: receipt.accepted.length,
                refused: receipt.refused.map((r) => `${r.recipient} (${r.reason})`).join("; ")
              })
            )
            yield* forwardedBy.partial
            return Replies.acceptedPartially(id, receipt.refused.map((r) => r.recipient))
          }
          yield* Effect.logInfo("message accepted").pipe(
            Effect.annotateLogs({
              gateway_id: id,
              size: message.size,
              recipients: envelope.rcptTo.length,
              skipped_as_duplicates: receipt.skipped,
              upstream_ids: receipt.accepted.map((a) => a.upstreamId).join(",")
            })
          )
          yield* forwardedBy.accepted
          return Replies.accepted(id)
        },
        Effect.tapError((error) => error.reply.isTemporary ? forwardedBy.temporary_failure : forwardedBy.rejected),
        Effect.trackDuration(processingDuration, Duration.toSeconds)
      )
      return Submission.of({ submit })
    })
  )
}

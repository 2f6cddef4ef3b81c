/**
 * Submission: the DATA-phase path in one readable Effect.fn:
 * parse → validate → transform → deliver → Reply.
 * It answers `250` only once the upstream has accepted the message; every failure is a typed error
 * that carries its own reply.
 */
import * as crypto from "node:crypto"
import { Clock, Context, DateTime, Duration, Effect, Layer, Metric } from "effect"
import { GatewayConfig } from "./Config.ts"
import { Delivery, type DeliveryError } from "./delivery/Delivery.ts"
import type { Envelope, SessionInfo } from "./domain/Envelope.ts"
import type { MessageRejected, MessageTooLarge, SenderRejected } from "./domain/Errors.ts"
import type { ReceivedMessage } from "./domain/Message.ts"
import type { Principal } from "./domain/Principal.ts"
import { type Reply, Replies } from "./domain/Reply.ts"
import { Parser } from "./message/Parser.ts"
import { deliveryRaw, toCanonical } from "./message/Transform.ts"
import { Validator } from "./message/Validator.ts"
import { emailsForwarded, processingDuration } from "./observability/Metrics.ts"
import type { SendersUnavailable } from "./policy/Senders.ts"

export interface SubmissionInput {
  readonly session: SessionInfo
  readonly principal: Principal
  readonly envelope: Envelope
  readonly message: ReceivedMessage
}

export type SubmissionError = SenderRejected | MessageRejected | MessageTooLarge | SendersUnavailable | DeliveryError

/** A gateway id: time-ordered (base36 milliseconds) then 10 random characters; fits a file name. */
export const makeGatewayId = (millis: number): string =>
  millis.toString(36).toUpperCase().padStart(9, "0") + crypto.randomBytes(8).toString("base64url").slice(0, 10).toUpperCase()
    .replace(/[^A-Z0-9]/g, "X")

const forwarded = (result: "accepted" | "partial" | "rejected" | "temporary_failure") =>
  Metric.update(Metric.withAttributes(emailsForwarded, { result }), 1)

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

      const submit = Effect.fn("Submission.submit")(
        function*({ envelope, message, principal, session }: SubmissionInput) {
          const started = yield* Clock.currentTimeMillis
          const parsed = yield* parser.parse(message)
          yield* validator.validate(parsed, principal)

          const id = makeGatewayId(started)
          const receivedAt = DateTime.formatIso(yield* DateTime.now)
          const context = { id, receivedAt, principal, envelope, session, hostname: config.smtp.hostname }
          yield* Effect.annotateCurrentSpan({ "smtp.gateway_id": id, "smtp.message_size": message.size })

          const receipt = yield* delivery.deliver({
            id,
            message: toCanonical(parsed, context),
            received: message,
            raw: deliveryRaw(message.raw, context),
            principal,
            recipients: envelope.rcptTo
          })
          if (receipt.refused.length > 0) {
            yield* Effect.logWarning("some recipients were refused by the email API").pipe(
              Effect.annotateLogs({
                gateway_id: id,
                accepted: receipt.accepted.length,
                refused: receipt.refused.map((r) => `${r.recipient} (${r.reason})`).join("; ")
              })
            )
            yield* forwarded("partial")
            return Replies.acceptedPartially(id, receipt.refused.map((r) => r.recipient))
          }
          yield* Effect.logInfo("message accepted").pipe(
            Effect.annotateLogs({
              gateway_id: id,
              size: message.size,
              recipients: envelope.rcptTo.length,
              upstream_ids: receipt.accepted.map((a) => a.upstreamId).join(",")
            })
          )
          yield* forwarded("accepted")
          return Replies.accepted(id)
        },
        Effect.tapError((error) => forwarded(error.reply.isTemporary ? "temporary_failure" : "rejected")),
        Effect.timed,
        Effect.tap(([elapsed]) => Metric.update(processingDuration, Duration.toSeconds(elapsed))),
        Effect.map(([, reply]) => reply)
      )
      return Submission.of({ submit })
    })
  )
}

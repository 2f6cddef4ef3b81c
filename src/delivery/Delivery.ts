/**
 * Delivery: hands one accepted message to the Upstream and says what became of every recipient.
 * Per-attempt timeout inside the whole-delivery deadline; fans out per recipient for upstreams that
 * take one recipient per call. It does not talk to any API itself (Upstream does) and keeps no queue.
 * Retries, the circuit breaker and the duplicate window wrap `attempt` (attempt → timeout → retry → breaker).
 */
import * as crypto from "node:crypto"
import { Context, Duration, Effect, Layer, Metric, Result, Schema } from "effect"
import { GatewayConfig } from "../Config.ts"
import type { Mailbox } from "../domain/Address.ts"
import type { CanonicalMessage, ReceivedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"
import { apiErrors } from "../observability/Metrics.ts"
import { apiErrorType, type Outbound, Upstream, type UpstreamAccepted, UpstreamError } from "./Upstream.ts"

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

/** How many per-recipient calls run at once for one message. */
export const fanOutConcurrency = 10

/**
 * The idempotency key of one upstream call: hex SHA-256 of the principal, the Message-ID, the digest
 * of the message as received and, for per-recipient calls, the recipient. A client's retry of the
 * same message gets the same key; two messages that share a Message-ID do not.
 */
export const idempotencyKey = (request: DeliveryRequest, recipient?: Mailbox): string =>
  crypto.createHash("sha256")
    .update([request.principal.username, request.message.message_id, request.received.sha256, recipient ?? ""].join("\0"))
    .digest("hex")

/** The one mapping from an upstream failure to what the delivery as a whole failed with. */
export const toDeliveryError = (error: UpstreamError): DeliveryError =>
  new DeliveryError({
    kind: error.kind,
    detail: error.detail,
    ...(error.retryAfterMillis === undefined ? {} : { retryAfterMillis: error.retryAfterMillis })
  })

type CallResult = Result.Result<UpstreamAccepted, UpstreamError>

/**
 * What became of the message, given every call and its result: any temporary failure makes the
 * whole delivery temporary (the client retries); otherwise accepted recipients make a receipt
 * naming the refused ones; nothing accepted is a permanent refusal.
 */
export const outcome = (
  calls: ReadonlyArray<ReadonlyArray<Mailbox>>,
  results: ReadonlyArray<CallResult>
): Result.Result<DeliveryReceipt, DeliveryError> => {
  const accepted: Array<DeliveryReceipt["accepted"][number]> = []
  const refused: Array<DeliveryReceipt["refused"][number]> = []
  const temporary: Array<UpstreamError> = []
  const permanent: Array<UpstreamError> = []
  results.forEach((result, i) => {
    const recipients = calls[i] ?? []
    if (Result.isSuccess(result)) {
      for (const recipient of recipients) accepted.push({ recipient, upstreamId: result.success.upstreamId })
    } else if (result.failure.isTemporary) {
      temporary.push(result.failure)
    } else {
      permanent.push(result.failure)
      for (const recipient of recipients) refused.push({ recipient, reason: result.failure.detail })
    }
  })
  if (temporary.length > 0) {
    // a plain temporary failure says more than a timeout; the longest Retry-After wins
    const first = temporary.find((e) => e.kind === "Temporary") ?? temporary[0]!
    const waits = temporary.flatMap((e) => e.retryAfterMillis === undefined ? [] : [e.retryAfterMillis])
    const error = toDeliveryError(first)
    return Result.fail(
      waits.length === 0
        ? error
        : new DeliveryError({ kind: error.kind, detail: error.detail, retryAfterMillis: Math.max(...waits) })
    )
  }
  const refusal = permanent[0]
  if (accepted.length === 0 && refusal !== undefined) return Result.fail(toDeliveryError(refusal))
  return Result.succeed({ accepted, refused })
}

export class Delivery extends Context.Service<Delivery, {
  readonly deliver: (request: DeliveryRequest) => Effect.Effect<DeliveryReceipt, DeliveryError>
}>()("smtp-gateway/delivery/Delivery") {
  static readonly layer: Layer.Layer<Delivery, never, Upstream | GatewayConfig> = Layer.effect(
    Delivery,
    Effect.gen(function*() {
      const upstream = yield* Upstream
      const { delivery: settings } = yield* GatewayConfig

      /** One call, bounded in time. Retry and the breaker go around this, in that order. */
      const attempt = (outbound: Outbound): Effect.Effect<UpstreamAccepted, UpstreamError> =>
        upstream.submit(outbound).pipe(
          Effect.timeoutOrElse({
            duration: settings.attemptTimeout,
            orElse: () =>
              Metric.update(Metric.withAttributes(apiErrors, { type: "timeout" }), 1).pipe(
                Effect.andThen(
                  new UpstreamError({
                    kind: "Timeout",
                    detail: `no answer within ${Duration.format(settings.attemptTimeout)}`
                  })
                )
              )
          })
        )

      const submit = Effect.fn("delivery.submit")(function*(outbound: Outbound) {
        yield* Effect.annotateCurrentSpan({
          "smtp.recipient_count": outbound.recipients.length,
          "upstream.name": upstream.name
        })
        return yield* attempt(outbound).pipe(
          Effect.tap((accepted) =>
            Effect.annotateCurrentSpan({ "upstream.id": accepted.upstreamId, "upstream.status": "accepted" })
          ),
          Effect.tapError((error) =>
            Effect.annotateCurrentSpan({ "upstream.status": apiErrorType(error.kind) }).pipe(
              Effect.andThen(Effect.logWarning("upstream call failed")),
              Effect.annotateLogs({
                gateway_id: outbound.id,
                upstream: upstream.name,
                kind: error.kind,
                detail: error.detail,
                recipient_count: outbound.recipients.length
              })
            )
          )
        )
      })

      const deliver = Effect.fn("Delivery.deliver")(
        function*(request: DeliveryRequest) {
          yield* Effect.annotateCurrentSpan({
            "smtp.recipient_count": request.recipients.length,
            "upstream.name": upstream.name
          })
          const calls: ReadonlyArray<ReadonlyArray<Mailbox>> = upstream.perRecipient
            ? request.recipients.map((recipient) => [recipient])
            : [request.recipients]
          const results = yield* Effect.forEach(
            calls,
            (recipients) =>
              Effect.result(submit({
                id: request.id,
                message: request.message,
                received: request.received,
                raw: request.raw,
                principal: request.principal,
                recipients,
                idempotencyKey: upstream.perRecipient
                  ? idempotencyKey(request, recipients[0])
                  : idempotencyKey(request)
              })),
            { concurrency: fanOutConcurrency }
          )
          return yield* Effect.fromResult(outcome(calls, results))
        },
        Effect.timeoutOrElse({
          duration: settings.deadline,
          orElse: () => Effect.fail(new DeliveryError({ kind: "Timeout", detail: "delivery deadline exceeded" }))
        })
      )

      return Delivery.of({ deliver })
    })
  )
}

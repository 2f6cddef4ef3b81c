/**
 * Delivery: hands one accepted message to the Upstream and says what became of every recipient:
 * duplicate window ▸ circuit breaker ▸ retry ▸ attempt timeout, inside the delivery deadline, fanned
 * out per recipient where the upstream takes one per call. Each delivery runs in a fiber of its own, so
 * a client that disconnects does not cancel it. It talks to no API itself and keeps no queue.
 */
import * as crypto from "node:crypto"
import { Clock, Context, Duration, Effect, Fiber, FiberSet, Layer, Metric, Result, Schema, Stream } from "effect"
import { CircuitBreaker, type Redis } from "effect/persistence"
import { GatewayConfig } from "../Config.ts"
import type { Mailbox } from "../domain/Address.ts"
import type { CanonicalMessage, ReceivedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"
import { apiErrors, circuitBreakerState } from "../observability/Metrics.ts"
import { DeadLetter } from "./DeadLetter.ts"
import { type Delivered, DuplicateWindow } from "./DuplicateWindow.ts"
import { breakerOutcome, maxRetryDelay, retrying, type RetrySettings } from "./RetryPolicy.ts"
import { apiErrorType, type Outbound, Upstream, type UpstreamAccepted, UpstreamError } from "./Upstream.ts"

export interface DeliveryRequest {
  /** The gateway id of this submission. */
  readonly id: string
  /** smtp-server's session id (dead-letter records name it). */
  readonly sessionId: string
  /** Clock millis when the final dot arrived: DELIVERY_DEADLINE counts from here. */
  readonly startedAt: number
  /** The Message-ID as received; `null` when the message had none, and then nothing is deduplicated. */
  readonly messageId: string | null
  readonly message: CanonicalMessage
  readonly received: ReceivedMessage
  /** The message as it travels on (Bcc removed, Received added), in pieces; may be a getter that makes them when read. */
  readonly raw: ReadonlyArray<Uint8Array>
  readonly principal: Principal
  readonly recipients: ReadonlyArray<Mailbox>
}

export interface DeliveryReceipt {
  /**
   * The id for `250 2.0.0 Ok: queued as <id>`: this submission's, or the earlier one's when every
   * call had been accepted on an earlier try (a client's retry gets the original answer).
   */
  readonly gatewayId: string
  /** True when every call had been accepted on an earlier try: nothing was sent this time. */
  readonly duplicate: boolean
  /** Calls answered from the duplicate window instead of being sent again. */
  readonly skipped: number
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
  /** The upstream's HTTP status, when it answered with one (401 and 403 are handled differently). */
  status: Schema.optional(Schema.Int),
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
const fanOutConcurrency = 10

/**
 * The key of one upstream call, both its `Idempotency-Key` and its duplicate-window key: hex SHA-256
 * of the principal, the Message-ID (as received; the generated one when there was none, which makes
 * the key stable across the gateway's own retries only), the digest of the message as received and
 * the recipients of the call (one for a per-recipient upstream). A client's retry of the same message
 * gets the same key; two messages that share a Message-ID, or the same bytes sent to other
 * recipients, do not.
 */
export const idempotencyKey = (request: DeliveryRequest, recipients: ReadonlyArray<Mailbox>): string =>
  crypto.createHash("sha256")
    .update(
      [
        request.principal.username,
        request.messageId ?? request.message.message_id,
        request.received.sha256,
        [...recipients].sort().join(",")
      ].join("\0")
    )
    .digest("hex")

/**
 * The one mapping from an upstream failure to what the delivery failed with. A temporary failure
 * that carries a Retry-After the gateway did not wait out tells the client how long to wait (451 4.7.1).
 */
const toDeliveryError = (error: UpstreamError): DeliveryError =>
  error.kind === "Temporary" && error.retryAfterMillis !== undefined
    ? new DeliveryError({ kind: "RateLimited", detail: error.detail, retryAfterMillis: error.retryAfterMillis })
    : new DeliveryError({
      kind: error.kind,
      detail: error.detail,
      ...(error.status === undefined ? {} : { status: error.status })
    })

/** The breaker refused the call without running it: 451 4.3.0 at once. */
const fromBreaker = (error: CircuitBreaker.CircuitBreakerError): DeliveryError =>
  new DeliveryError({
    kind: "Unavailable",
    detail: "the email API is failing; calls are paused",
    ...(error.reason._tag === "CircuitOpen" ? { retryAfterMillis: Duration.toMillis(error.reason.retryAfter) } : {})
  })

/** One call that ended well: now, or on an earlier try (`previously`). */
interface CallAccepted {
  readonly upstreamId: string
  readonly previously?: Delivered | undefined
}

/**
 * What became of the message, given every call and its result: any temporary failure makes the
 * whole delivery temporary (the client retries; the longest Retry-After wins, and a plain failure
 * says more than a timeout); otherwise accepted recipients make a receipt naming the refused ones;
 * nothing accepted is a permanent refusal.
 */
const outcome = (
  gatewayId: string,
  calls: ReadonlyArray<ReadonlyArray<Mailbox>>,
  results: ReadonlyArray<Result.Result<CallAccepted, DeliveryError>>
): Result.Result<DeliveryReceipt, DeliveryError> => {
  const accepted: Array<DeliveryReceipt["accepted"][number]> = []
  const refused: Array<DeliveryReceipt["refused"][number]> = []
  const previously: Array<Delivered> = []
  const temporary: Array<DeliveryError> = []
  const permanent: Array<DeliveryError> = []
  results.forEach((result, i) => {
    const recipients = calls[i] ?? []
    if (Result.isSuccess(result)) {
      for (const recipient of recipients) accepted.push({ recipient, upstreamId: result.success.upstreamId })
      if (result.success.previously !== undefined) previously.push(result.success.previously)
    } else if (result.failure.reply.isTemporary) {
      temporary.push(result.failure)
    } else {
      permanent.push(result.failure)
      for (const recipient of recipients) refused.push({ recipient, reason: result.failure.detail })
    }
  })
  if (temporary.length > 0) {
    const waits = temporary.filter((e) => e.kind === "RateLimited").map((e) => e.retryAfterMillis ?? 0)
    if (waits.length > 0) {
      const wait = Math.max(...waits)
      const longest = temporary.find((e) => e.kind === "RateLimited" && e.retryAfterMillis === wait)!
      return Result.fail(longest)
    }
    return Result.fail(temporary.find((e) => e.kind !== "Timeout") ?? temporary[0]!)
  }
  const refusal = permanent[0]
  if (accepted.length === 0 && refusal !== undefined) return Result.fail(refusal)
  const duplicate = previously.length === results.length && results.length > 0
  const latest = previously.reduce<Delivered | undefined>((a, b) => a === undefined || b.at > a.at ? b : a, undefined)
  return Result.succeed({
    gatewayId: duplicate && latest !== undefined ? latest.gatewayId : gatewayId,
    duplicate,
    skipped: previously.length,
    accepted,
    refused
  })
}

/** `smtp_circuit_breaker_state` values. */
const breakerStateValue = { Closed: 0, HalfOpen: 1, Open: 2 } as const

/**
 * One circuit per upstream name: it opens when at least half of the last calls failed (once at least
 * 10 are recorded, of the last 20), stays open 30 seconds, then lets one probe through. The memory
 * store forgets a circuit idle for 60 seconds, so old failures stop counting.
 */
const breakerLayer: Layer.Layer<CircuitBreaker.CircuitBreaker> = CircuitBreaker.layer({
  tripPolicy: CircuitBreaker.rate({ threshold: 0.5, size: 20, minimumCalls: 10 }),
  openDuration: "30 seconds"
}).pipe(Layer.provide(CircuitBreaker.layerStoreMemory({ idleTimeToLive: "60 seconds" })))

const make = Effect.gen(function*() {
  const upstream = yield* Upstream
  const { delivery: settings } = yield* GatewayConfig
  const window = yield* DuplicateWindow
  const deadLetter = yield* DeadLetter
  const breaker = yield* CircuitBreaker.CircuitBreaker
  const retry: RetrySettings = {
    maxAttempts: settings.maxAttempts,
    baseDelay: settings.baseDelay,
    maxDelay: maxRetryDelay
  }

  // deliveries run here, not in the caller's fiber: a client that leaves does not cancel them;
  // at shutdown the ones already started finish (each within its deadline) before the set closes
  const inFlight = yield* FiberSet.make<DeliveryReceipt, DeliveryError>()
  yield* Effect.addFinalizer(() => FiberSet.awaitEmpty(inFlight).pipe(Effect.timeoutOption(settings.deadline)))

  yield* Metric.update(circuitBreakerState, breakerStateValue.Closed)
  yield* breaker.transitions.pipe(
    Stream.runForEach((transition) =>
      Metric.update(circuitBreakerState, breakerStateValue[transition.to]).pipe(
        Effect.andThen(
          transition.to === "Open"
            ? Effect.logWarning("circuit breaker opened: calls to the email API are paused").pipe(
              Effect.annotateLogs({ retry_after: Duration.format(transition.retryAfter) })
            )
            : Effect.logInfo(`circuit breaker ${transition.to === "HalfOpen" ? "half-open: probing" : "closed"}`)
        ),
        Effect.annotateLogs({ upstream: transition.key, from: transition.from, to: transition.to })
      )
    ),
    Effect.forkScoped({ startImmediately: true })
  )

  /** One call, bounded in time. */
  const attempt = (outbound: Outbound): Effect.Effect<UpstreamAccepted, UpstreamError> =>
    upstream.submit(outbound).pipe(
      Effect.timeoutOrElse({
        duration: settings.attemptTimeout,
        orElse: () =>
          Metric.update(Metric.withAttributes(apiErrors, { type: "timeout" }), 1).pipe(
            Effect.andThen(
              new UpstreamError({ kind: "Timeout", detail: `no answer within ${Duration.format(settings.attemptTimeout)}` })
            )
          )
      })
    )

  /** breaker ▸ retry ▸ attempt timeout. */
  const submit = Effect.fnUntraced(function*(outbound: Outbound, deadlineAt: number) {
    yield* Effect.annotateCurrentSpan({
      "smtp.recipient_count": outbound.recipients.length,
      "upstream.name": upstream.name
    })
    return yield* retrying(attempt(outbound), retry, deadlineAt).pipe(
      breaker.execute({ key: upstream.name, classify: breakerOutcome }),
      Effect.tap((accepted) =>
        Effect.annotateCurrentSpan({ "upstream.id": accepted.upstreamId, "upstream.status": "accepted" })
      ),
      Effect.tapError((error) => {
        const type = error._tag === "UpstreamError" ? apiErrorType(error.kind) : "circuit_open"
        return Effect.annotateCurrentSpan({ "upstream.status": type }).pipe(
          Effect.andThen(
            error._tag === "UpstreamError"
              ? Effect.logWarning("upstream call failed")
              : Metric.update(Metric.withAttributes(apiErrors, { type }), 1)
          ),
          Effect.annotateLogs({
            gateway_id: outbound.id,
            upstream: upstream.name,
            kind: error._tag === "UpstreamError" ? error.kind : error.reason._tag,
            detail: error.message,
            recipient_count: outbound.recipients.length
          })
        )
      }),
      Effect.mapError((error) => error._tag === "UpstreamError" ? toDeliveryError(error) : fromBreaker(error))
    )
  }, Effect.withSpan("delivery.submit"))

  /** duplicate window ▸ submit: a call already accepted is not sent again; one in flight is waited for. */
  const call = (request: DeliveryRequest, recipients: ReadonlyArray<Mailbox>, deadlineAt: number) => {
    const key = idempotencyKey(request, recipients)
    const outbound: Outbound = {
      id: request.id,
      message: request.message,
      // read only by an upstream that writes the bytes (the outbox): not made otherwise
      get raw() {
        return request.raw
      },
      principal: request.principal,
      recipients,
      idempotencyKey: key
    }
    if (request.messageId === null) return submit(outbound, deadlineAt)
    return Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const claim = yield* restore(window.claim(key))
        if (claim._tag === "Delivered") {
          return { upstreamId: claim.delivered.upstreamId, previously: claim.delivered } satisfies CallAccepted
        }
        // once the upstream said yes, the window records it even if the deadline or shutdown interrupts now
        return yield* restore(submit(outbound, deadlineAt)).pipe(
          Effect.tap((accepted) =>
            Effect.flatMap(Clock.currentTimeMillis, (at) =>
              claim.complete({ upstreamId: accepted.upstreamId, gatewayId: request.id, at }))
          ),
          Effect.onError(() => claim.release)
        )
      })
    )
  }

  const run = (request: DeliveryRequest) =>
    Effect.gen(function*() {
      const deadlineAt = request.startedAt + Duration.toMillis(settings.deadline)
      const remaining = deadlineAt - (yield* Clock.currentTimeMillis)
      const calls: ReadonlyArray<ReadonlyArray<Mailbox>> = upstream.perRecipient
        ? request.recipients.map((recipient) => [recipient])
        : [request.recipients]
      const one = calls.length === 1 ? calls[0] : undefined
      // one call (a whole-message upstream, or one recipient) runs in this fiber: no fan-out fibers
      const all = one !== undefined
        ? Effect.map(Effect.result(call(request, one, deadlineAt)), (result) => [result])
        : Effect.forEach(calls, (recipients) => Effect.result(call(request, recipients, deadlineAt)), {
          concurrency: fanOutConcurrency
        })
      const results = yield* all.pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(Math.max(0, remaining)),
          orElse: () => Effect.fail(new DeliveryError({ kind: "Timeout", detail: "delivery deadline exceeded" }))
        })
      )
      const receipt = yield* Effect.fromResult(outcome(request.id, calls, results))
      for (const { reason, recipient } of receipt.refused) {
        yield* deadLetter.record({
          sessionId: request.sessionId,
          gatewayId: request.id,
          messageId: request.message.message_id,
          recipient,
          reason
        })
      }
      return receipt
    })

  // no span of its own: each upstream call is a delivery.submit span under the caller's (smtp.data)
  const deliver = Effect.fnUntraced(function*(request: DeliveryRequest) {
    const fiber = yield* FiberSet.run(inFlight, run(request))
    return yield* Fiber.join(fiber)
  })

  return Delivery.of({ deliver })
})

export class Delivery extends Context.Service<Delivery, {
  /**
   * Delivers to every recipient, within DELIVERY_DEADLINE of `request.startedAt`. Interrupting the
   * caller does not cancel the delivery: it completes and its outcome stays in the duplicate window.
   */
  readonly deliver: (request: DeliveryRequest) => Effect.Effect<DeliveryReceipt, DeliveryError>
}>()("smtp-gateway/delivery/Delivery") {
  /** Every dependency from the context: for tests that choose the window, dead-letter place or breaker. */
  static readonly layerNoDeps: Layer.Layer<
    Delivery,
    never,
    Upstream | GatewayConfig | DuplicateWindow | DeadLetter | CircuitBreaker.CircuitBreaker
  > = Layer.effect(Delivery, make)

  /** The window (memory, or Redis when REDIS_URL is set), DATA_DIR/dead-letter and the breaker from config. */
  static readonly layer: Layer.Layer<Delivery, Redis.RedisError, Upstream | GatewayConfig> = this.layerNoDeps.pipe(
    Layer.provide([DuplicateWindow.layer, DeadLetter.layer, breakerLayer])
  )
}

/**
 * RetryPolicy: what a failed upstream call means, decided in one place: retry or not and after how
 * long (exponential backoff with jitter and a cap, or `Retry-After` when it fits the deadline), and
 * whether it counts against the circuit breaker. Pure rules plus the retry loop; it calls nothing.
 */
import { Clock, Duration, Effect, Exit, Option, Random } from "effect"
import { CircuitBreaker } from "effect/persistence"
import type { UpstreamError } from "./Upstream.ts"

export interface RetrySettings {
  /** Attempts per call, the first included (RETRY_MAX_ATTEMPTS). */
  readonly maxAttempts: number
  /** The delay before the first retry; it doubles for each further one (RETRY_BASE_DELAY). */
  readonly baseDelay: Duration.Duration
  /** No single backoff delay is longer than this. */
  readonly maxDelay: Duration.Duration
}

/** The cap on one backoff delay: well inside the default 30 second delivery deadline. */
export const maxRetryDelay = Duration.seconds(5)

/**
 * The delay before retry number `retry` (1 is the first retry): `base · 2^(retry-1)`, capped, then
 * "equal jitter": half of it fixed, half random (`random` in [0, 1)), so callers that failed together
 * do not retry together.
 */
export const backoffMillis = (settings: RetrySettings, retry: number, random: number): number => {
  const ceiling = Math.min(
    Duration.toMillis(settings.maxDelay),
    Duration.toMillis(settings.baseDelay) * 2 ** Math.max(0, retry - 1)
  )
  return Math.round(ceiling / 2 + random * (ceiling / 2))
}

export type RetryDecision =
  | { readonly _tag: "Retry"; readonly delayMillis: number }
  | { readonly _tag: "GiveUp" }

const giveUp: RetryDecision = { _tag: "GiveUp" }

/**
 * After attempt number `attempt` failed with `error`, with `remainingMillis` left before the delivery
 * deadline: permanent failures and the last attempt give up; a `Retry-After` is honoured as given
 * (it may exceed the backoff cap) and otherwise the backoff applies; a wait that would reach the
 * deadline gives up at once, so the client hears back now rather than at the deadline.
 */
export const decide = (
  settings: RetrySettings,
  error: UpstreamError,
  attempt: number,
  remainingMillis: number,
  random: number
): RetryDecision => {
  if (!error.isTemporary || attempt >= settings.maxAttempts) return giveUp
  const delayMillis = error.retryAfterMillis ?? backoffMillis(settings, attempt, random)
  return delayMillis < remainingMillis ? { _tag: "Retry", delayMillis } : giveUp
}

/**
 * Runs `attempt` until it succeeds or `decide` gives up, sleeping on the Clock between attempts and
 * recording each retry as an event of the current span. Fails with the last attempt's error.
 */
export const retrying = <A, R>(
  attempt: Effect.Effect<A, UpstreamError, R>,
  settings: RetrySettings,
  deadlineMillis: number
): Effect.Effect<A, UpstreamError, R> =>
  Effect.gen(function*() {
    for (let n = 1;; n++) {
      const result = yield* Effect.result(attempt)
      if (result._tag === "Success") {
        yield* Effect.annotateCurrentSpan({ "delivery.attempts": n })
        return result.success
      }
      const now = yield* Clock.currentTimeMillis
      const decision = decide(settings, result.failure, n, deadlineMillis - now, yield* Random.next)
      if (decision._tag === "GiveUp") {
        yield* Effect.annotateCurrentSpan({ "delivery.attempts": n })
        return yield* result.failure
      }
      const span = yield* Effect.option(Effect.currentSpan)
      if (Option.isSome(span)) {
        span.value.event("retry", BigInt(now) * 1_000_000n, {
          "retry.attempt": n + 1,
          "retry.delay_ms": decision.delayMillis,
          "retry.reason": result.failure.detail
        })
      }
      yield* Effect.sleep(Duration.millis(decision.delayMillis))
    }
  })

/**
 * How a call's exit counts for the circuit breaker: a success closes; a temporary failure (timeout,
 * reset, refused, 5xx, 429) counts against the upstream, with its Retry-After as a hint; a permanent
 * refusal (400, 413, 422, a rejected status, 401/403) says the upstream is up and is ignored.
 */
export const breakerOutcome = <A>(exit: Exit.Exit<A, UpstreamError>): CircuitBreaker.Outcome => {
  if (Exit.isSuccess(exit)) return CircuitBreaker.success
  const error = Exit.findErrorOption(exit)
  if (Option.isNone(error)) return CircuitBreaker.failure()
  if (!error.value.isTemporary) return CircuitBreaker.ignored
  const retryAfter = error.value.retryAfterMillis
  return CircuitBreaker.failure(retryAfter === undefined ? undefined : { retryAfter: Duration.millis(retryAfter) })
}

/**
 * Upstream: the outbound transport behind one interface. `outbox` writes files, `http` posts the
 * canonical JSON to UPSTREAM_URL, `cakemail` (its own file) posts one email per recipient;
 * `layerMemory` records what was sent and answers as a test tells it (`MemoryUpstream`).
 * Classifies failures (UpstreamError); it does not time out, retry or fan out: Delivery does.
 */
import { Clock, Context, Duration, Effect, Layer, Metric, Ref, Schema } from "effect"
import type { Mailbox } from "../domain/Address.ts"
import type { CanonicalMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"
import { apiErrors, apiLatency } from "../observability/Metrics.ts"

/** One call to the upstream: the whole message, for the recipients of this call. */
export interface Outbound {
  /** The gateway id: `250 2.0.0 Ok: queued as <id>`, the outbox file name, the canonical `id`. */
  readonly id: string
  readonly message: CanonicalMessage
  /** The message as it travels on (Bcc removed, Received added), in pieces: what the outbox writes as .eml. */
  readonly raw: ReadonlyArray<Uint8Array>
  readonly principal: Principal
  /** All envelope recipients for a whole-message upstream; exactly one for a per-recipient one. */
  readonly recipients: ReadonlyArray<Mailbox>
  /** Stable across client retries of the same message (and recipient, for per-recipient upstreams). */
  readonly idempotencyKey: string
}

export interface UpstreamAccepted {
  /** The upstream's own id for what it accepted (logged, traced; not shown to the client). */
  readonly upstreamId: string
}

/**
 * Why an upstream call failed, classified once, here:
 * - Temporary: 429, 5xx, reset, refused: the client retries later (451 4.3.0);
 * - Timeout: the attempt ran out of time (451 4.4.1);
 * - Rejected: the API refused this message for good (400, 422, a rejected status) (554 5.6.0);
 * - TooLarge: 413 (552 5.3.4);
 * - Unauthorized: 401/403: the principal's key is no longer good (550 5.7.1).
 */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  kind: Schema.Literals(["Temporary", "Timeout", "Rejected", "TooLarge", "Unauthorized"]),
  /** Short and safe to show to the client (no secrets, no body). */
  detail: Schema.String,
  status: Schema.optional(Schema.Int),
  /** From a Retry-After header, in milliseconds. */
  retryAfterMillis: Schema.optional(Schema.Number)
}) {
  get isTemporary() {
    return this.kind === "Temporary" || this.kind === "Timeout"
  }

  /** What logs and causes show: the detail (the error has no message of its own). */
  override get message() {
    return this.detail
  }
}

/** The `type` label of `smtp_api_errors_total` and the `upstream.status` span attribute for a failure. */
export const apiErrorType = (kind: UpstreamError["kind"]): "temporary" | "timeout" | "rejected" | "too_large" | "unauthorized" => {
  switch (kind) {
    case "Temporary":
      return "temporary"
    case "Timeout":
      return "timeout"
    case "Rejected":
      return "rejected"
    case "TooLarge":
      return "too_large"
    case "Unauthorized":
      return "unauthorized"
  }
}

/** `smtp_api_errors_total` by type, made once. */
const apiErrorsBy = {
  temporary: Metric.withAttributes(apiErrors, { type: "temporary" }),
  timeout: Metric.withAttributes(apiErrors, { type: "timeout" }),
  rejected: Metric.withAttributes(apiErrors, { type: "rejected" }),
  too_large: Metric.withAttributes(apiErrors, { type: "too_large" }),
  unauthorized: Metric.withAttributes(apiErrors, { type: "unauthorized" })
}

/**
 * One call to an email API, timed (`smtp_api_latency_seconds`) and, when it fails, counted by type
 * (`smtp_api_errors_total`). Each upstream wraps its API call in it, and nothing else (a refusal made
 * before any call is not an API error).
 */
export const metered = <A, R>(call: Effect.Effect<A, UpstreamError, R>): Effect.Effect<A, UpstreamError, R> =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const result = yield* Effect.result(call)
    yield* Metric.update(apiLatency, ((yield* Clock.currentTimeMillis) - started) / 1000)
    if (result._tag === "Success") return result.success
    yield* Metric.update(apiErrorsBy[apiErrorType(result.failure.kind)], 1)
    return yield* result.failure
  })

/** How the memory upstream answers one call; `delay` passes on the Clock first (TestClock in tests). */
export type MemoryAnswer =
  | { readonly _tag: "Accept"; readonly upstreamId?: string; readonly delay?: Duration.Input }
  | { readonly _tag: "Fail"; readonly error: UpstreamError; readonly delay?: Duration.Input }

/** The test side of `Upstream.layerMemory`: what was submitted, and how the next calls answer. */
export class MemoryUpstream extends Context.Service<MemoryUpstream, {
  /** Every call received so far, in arrival order (recorded before any delay). */
  readonly sent: Effect.Effect<ReadonlyArray<Outbound>>
  /** Queues answers for the next calls, in order; once they are used up, `answerWith` decides. */
  readonly enqueue: (...answers: ReadonlyArray<MemoryAnswer>) => Effect.Effect<void>
  /** How calls answer when the queue is empty (default: accept as `memory-<n>`). */
  readonly answerWith: (answer: (outbound: Outbound) => MemoryAnswer) => Effect.Effect<void>
}>()("smtp-gateway/delivery/MemoryUpstream") {
  static readonly accept = (upstreamId?: string, delay?: Duration.Input): MemoryAnswer => ({
    _tag: "Accept",
    ...(upstreamId === undefined ? {} : { upstreamId }),
    ...(delay === undefined ? {} : { delay })
  })
  static readonly fail = (error: UpstreamError, delay?: Duration.Input): MemoryAnswer => ({
    _tag: "Fail",
    error,
    ...(delay === undefined ? {} : { delay })
  })
}

export interface UpstreamShape {
  readonly name: "outbox" | "http" | "cakemail" | "memory"
  /** True when each call carries one recipient (Cakemail); Delivery then fans out. */
  readonly perRecipient: boolean
  readonly submit: (outbound: Outbound) => Effect.Effect<UpstreamAccepted, UpstreamError>
}

const makeMemory = (options: { readonly perRecipient: boolean }) =>
  Effect.gen(function*() {
    const state = yield* Ref.make<{
      readonly sent: ReadonlyArray<Outbound>
      readonly queue: ReadonlyArray<MemoryAnswer>
      readonly fallback: (outbound: Outbound) => MemoryAnswer
    }>({ sent: [], queue: [], fallback: () => MemoryUpstream.accept() })

    const submit = (outbound: Outbound): Effect.Effect<UpstreamAccepted, UpstreamError> =>
      Effect.gen(function*() {
        const [answer, count] = yield* Ref.modify(state, (s) => {
          const [next, ...rest] = s.queue
          const sent = [...s.sent, outbound]
          return [
            [next ?? s.fallback(outbound), sent.length] as const,
            { ...s, sent, queue: next === undefined ? s.queue : rest }
          ]
        })
        if (answer.delay !== undefined) yield* Effect.sleep(answer.delay)
        if (answer._tag === "Fail") return yield* answer.error
        return { upstreamId: answer.upstreamId ?? `memory-${count}` }
      })

    const upstream: UpstreamShape = { name: "memory", perRecipient: options.perRecipient, submit }
    const memory = MemoryUpstream.of({
      sent: Effect.map(Ref.get(state), (s) => s.sent),
      enqueue: (...answers) => Ref.update(state, (s) => ({ ...s, queue: [...s.queue, ...answers] })),
      answerWith: (fallback) => Ref.update(state, (s) => ({ ...s, fallback }))
    })
    return Context.make(Upstream, upstream).pipe(Context.add(MemoryUpstream, memory))
  })

export class Upstream extends Context.Service<Upstream, UpstreamShape>()("smtp-gateway/delivery/Upstream") {
  /** A whole-message upstream that records every call; drive it with `MemoryUpstream`. */
  static readonly layerMemory: Layer.Layer<Upstream | MemoryUpstream> = Layer.effectContext(
    makeMemory({ perRecipient: false })
  )
  /** Like `layerMemory`, but one recipient per call (as Cakemail), so Delivery fans out. */
  static readonly layerMemoryPerRecipient: Layer.Layer<Upstream | MemoryUpstream> = Layer.effectContext(
    makeMemory({ perRecipient: true })
  )
}

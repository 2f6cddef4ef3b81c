/**
 * Readiness: whether this process should receive new SMTP connections. `starting` until the SMTP
 * listener accepts, `ready` while it does, `draining` from the moment shutdown begins.
 * GET /health/ready answers 200 only when `ready`.
 */
import { Context, Effect, Layer, Ref } from "effect"

export type ReadinessState = "starting" | "ready" | "draining"

export class Readiness extends Context.Service<Readiness, {
  readonly get: Effect.Effect<ReadinessState>
  readonly set: (state: ReadinessState) => Effect.Effect<void>
}>()("smtp-gateway/admin/Readiness") {
  static readonly layer = Layer.effect(
    Readiness,
    Effect.gen(function*() {
      const ref = yield* Ref.make<ReadinessState>("starting")
      return Readiness.of({ get: Ref.get(ref), set: (state) => Ref.set(ref, state) })
    })
  )
}

/**
 * SessionControl: how the admin API reaches the SMTP listener's sessions (list, disconnect, drain).
 * The admin HTTP server starts before the listener and stops after it (it answers /health/ready during
 * the drain), so the listener is attached here once it listens; until then there is nothing to control.
 */
import { Context, Effect, Layer, Option, Ref } from "effect"
import { SmtpListener } from "../smtp/Listener.ts"

/** What the admin API may do with the sessions: a view of the SmtpListener. */
export type SessionTarget = Pick<SmtpListener["Service"], "sessions" | "disconnect" | "drain">

export class SessionControl extends Context.Service<SessionControl, {
  readonly attach: (target: SessionTarget) => Effect.Effect<void>
  /** The listener, once attached. */
  readonly target: Effect.Effect<Option.Option<SessionTarget>>
}>()("smtp-gateway/admin/SessionControl") {
  static readonly layer: Layer.Layer<SessionControl> = Layer.effect(
    SessionControl,
    Effect.gen(function*() {
      const ref = yield* Ref.make(Option.none<SessionTarget>())
      return SessionControl.of({
        attach: (target) => Ref.set(ref, Option.some(target)),
        target: Ref.get(ref)
      })
    })
  )

  /** Attaches the SmtpListener of the context (build it after the listener). */
  static readonly attachListener: Layer.Layer<never, never, SessionControl | SmtpListener> = Layer.effectDiscard(
    Effect.gen(function*() {
      const control = yield* SessionControl
      yield* control.attach(yield* SmtpListener)
    })
  )
}

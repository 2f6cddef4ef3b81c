/**
 * Waiting, with a timeout, until a condition over some mutable state holds, woken by whatever changes
 * that state (socket data, a child's output, an HTTP request). Any number of waiters at once; each one
 * looks again on every wake. Nothing is delivered to them: it is no queue and no pub/sub.
 */
import { type Duration, Effect, type Result } from "effect"

export interface Waiters {
  /** Every waiter looks again; call it after each change of the state they watch. */
  readonly wake: () => void
  /**
   * Waits until `poll` gives a Result and ends with it (`undefined`: not yet). `poll` runs at once and on
   * every wake; after `timeout` the wait fails with `onTimeout()`.
   */
  readonly until: <A, E>(
    poll: () => Result.Result<A, E> | undefined,
    timeout: Duration.Input,
    onTimeout: () => E
  ) => Effect.Effect<A, E>
}

export const makeWaiters = (): Waiters => {
  const waiting = new Set<() => void>()
  return {
    wake: () => {
      for (const check of waiting) check()
    },
    until: <A, E>(poll: () => Result.Result<A, E> | undefined, timeout: Duration.Input, onTimeout: () => E) =>
      Effect.callback<A, E>((resume) => {
        const check = () => {
          const result = poll()
          if (result === undefined) return
          waiting.delete(check)
          resume(Effect.fromResult(result))
        }
        waiting.add(check)
        check()
        return Effect.sync(() => void waiting.delete(check))
      }).pipe(
        Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(onTimeout()) })
      )
  }
}

/**
 * The single bridge between an smtp-server callback and the gateway's Effects: run the hook's Effect
 * inside its session, turn the Exit into exactly one reply, call the callback exactly once. The only
 * code that turns a Cause into a Reply. It decides nothing about SMTP itself.
 */
import { Cause, Effect, Exit, type Fiber, Option, Result } from "effect"
import { isRespondable, Replies, type Reply } from "../domain/Reply.ts"

/** What smtp-server reads from a handler's error: `responseCode` and the reply text. */
export interface SmtpReplyError extends Error {
  readonly responseCode: number
}

/**
 * The text smtp-server writes after the code. It starts with our enhanced status code; the listener's
 * connection then sends it as is (see `carriesEnhancedCode`), so the wire shows `Reply.toString()`.
 */
export const wireText = (reply: Reply): string => `${reply.enhanced} ${reply.text}`

/** True for text made by `wireText`: smtp-server must not add its own enhanced code in front. */
export const carriesEnhancedCode = (text: string): boolean => /^[245]\.\d{1,3}\.\d{1,3} /.test(text)

export const toServerError = (reply: Reply): SmtpReplyError =>
  Object.assign(new Error(wireText(reply)), { responseCode: reply.code })

/** The outcome of a hook: its value, or the reply that refuses the command. */
export type Outcome<A> = Result.Result<A, Reply>

/**
 * The reply a failed hook earns: a typed error that knows its reply gives that reply, unless the cause
 * also holds a defect. `None` for a defect, an untyped failure or interruption (each caller answers those).
 */
export const refusalOf = (cause: Cause.Cause<unknown>): Option.Option<Reply> => {
  const error = Cause.findErrorOption(cause)
  return Option.isSome(error) && isRespondable(error.value) && !Cause.hasDies(cause)
    ? Option.some(error.value.reply)
    : Option.none()
}

/**
 * A typed failure that knows its reply gives that reply; any other failure or defect gives
 * `451 4.3.0` and is logged with its cause (never shown). Interruption is kept: `run` answers it.
 */
const settle = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<Outcome<A>, never, R> =>
  effect.pipe(
    Effect.map((a): Outcome<A> => Result.succeed(a)),
    Effect.catchCause((cause): Effect.Effect<Outcome<A>> => {
      if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
      return Option.match(refusalOf(cause), {
        onSome: (reply) => Effect.succeed(Result.fail(reply)),
        onNone: () =>
          Effect.logError("internal error in an SMTP hook", cause).pipe(Effect.as(Result.fail(Replies.internalError)))
      })
    })
  )

/** Forks an effect inside a session; `undefined` when the session is gone. */
export type Fork<R> = <A>(effect: Effect.Effect<A, never, R>) => Fiber.Fiber<A>

/**
 * Runs `effect` in the session through `fork` and hands `respond` exactly one outcome: the result,
 * the refusal's reply, or `421 4.3.2` when the session ends (or the gateway shuts down) first.
 */
export const run = <A, E, R>(
  fork: Fork<R> | undefined,
  effect: Effect.Effect<A, E, R>,
  respond: (outcome: Outcome<A>) => void
): void => {
  let answered = false
  const answer = (outcome: Outcome<A>) => {
    if (answered) return
    answered = true
    respond(outcome)
  }
  if (fork === undefined) return answer(Result.fail(Replies.shuttingDown))
  const fiber = fork(settle(effect))
  fiber.addObserver((exit) =>
    answer(
      Exit.isSuccess(exit)
        ? exit.value
        : Result.fail(Cause.hasInterruptsOnly(exit.cause) ? Replies.shuttingDown : Replies.internalError)
    )
  )
}

/** The callback of onConnect, onSecure, onMailFrom and onRcptTo: nothing on success, else the reply. */
export const toCallback = (callback: (err?: Error | null) => void) => (outcome: Outcome<unknown>): void =>
  Result.isSuccess(outcome) ? callback(null) : callback(toServerError(outcome.failure))

/**
 * `smtp-gateway serve`: runs the Gateway layer until SIGTERM/SIGINT, then drains and exits 0.
 * A startup problem (bad configuration, a port it cannot bind, unreadable TLS files) is printed as
 * plain sentences on stderr and exits 1.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, Layer, Predicate } from "effect"
import { Gateway } from "./Gateway.ts"

/** Errors that describe a startup problem in words meant for the operator. */
const startupTags = new Set(["ConfigInvalid", "ListenError", "TlsSetupError", "UsersFileError", "ServeError"])

const explain = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (Predicate.isTagged(error, "ConfigInvalid") || (Predicate.hasProperty(error, "_tag") &&
    startupTags.has(String(error._tag)) && error instanceof Error)) {
    return (error as Error).message
  }
  return Cause.pretty(cause)
}

export const serve = (): void =>
  Layer.launch(Gateway).pipe(
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : Console.error(`smtp-gateway: ${explain(cause)}`)
    ),
    NodeRuntime.runMain({
      disableErrorReporting: true,
      // a signal interrupts the gateway: after a graceful drain that is a clean exit
      teardown: (exit, onExit) =>
        onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
    })
  )

/**
 * `smtp-gateway serve`: runs the Gateway layer until SIGTERM/SIGINT, then drains and exits 0; a
 * shutdown that overruns SHUTDOWN_DRAIN_TIMEOUT by a margin exits 1. A startup problem (bad
 * configuration, a port it cannot bind, unreadable TLS files) is printed as plain sentences on stderr
 * and exits 1.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Duration, Effect, Exit, Layer, Predicate } from "effect"
import { GatewayConfig } from "./Config.ts"
import { GatewayNoConfig } from "./Gateway.ts"

/** Beyond the drain: time to flush traces (up to 5 s) and close the HTTP server. */
const shutdownMargin = Duration.seconds(10)

/**
 * Built last, so released first when a signal arrives: arms an unref'd timer that ends the process
 * with exit code 1 if draining and flushing are not done by SHUTDOWN_DRAIN_TIMEOUT plus the margin
 * (a finalizer that hangs must not keep a pod terminating until it is killed).
 */
const HardDeadline = Layer.effectDiscard(
  Effect.gen(function*() {
    const { shutdownDrainTimeout } = yield* GatewayConfig
    const limit = Duration.sum(shutdownDrainTimeout, shutdownMargin)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        setTimeout(() => {
          process.stderr.write(`smtp-gateway: shutdown did not finish within ${Duration.format(limit)}; exiting\n`)
          process.exit(1)
        }, Duration.toMillis(limit)).unref()
      })
    )
  })
)

/** Errors that describe a startup problem in words meant for the operator. */
const startupTags = new Set(["ConfigInvalid", "ListenError", "TlsSetupError", "UsersFileError", "ServeError"])

const explain = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  if (error instanceof Error && Predicate.hasProperty(error, "_tag") && startupTags.has(String(error._tag))) {
    return error.message
  }
  return Cause.pretty(cause)
}

export const serve = (): void =>
  Layer.launch(HardDeadline.pipe(Layer.provideMerge(GatewayNoConfig), Layer.provide(GatewayConfig.layer))).pipe(
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

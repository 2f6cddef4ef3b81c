/**
 * The gateway as a real operating-system process: `node --import tsx src/cli.ts serve` (the same entry
 * point as `bin/smtp-gateway.js`, without a build step), on loopback port 0 in a temporary DATA_DIR
 * with user `alice`. Tests read its stdout line by line, send it signals and read its exit code.
 * Test support only.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import { type Duration, Effect, Predicate, Result, type Scope } from "effect"
import { makeWaiters } from "../../src/capture/Waiters.ts"
import { loopbackEnv, type TestEnv } from "./TestConfig.ts"
import { dataDirWithAlice } from "./TestGateway.ts"

const root = path.resolve(import.meta.dirname, "../..")

export interface GatewayProcess {
  readonly pid: number
  readonly smtpPort: number
  readonly httpPort: number
  readonly dataDir: string
  /** Every stdout line so far. */
  readonly stdout: Effect.Effect<ReadonlyArray<string>>
  /** Everything written on stderr so far. */
  readonly stderr: Effect.Effect<string>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits for the process to exit (up to `timeout`) and gives its exit code. */
  readonly exitCode: (timeout?: Duration.Input) => Effect.Effect<number, Error>
  /** Waits until a stdout line satisfies `ready` and returns it. */
  readonly awaitLine: (ready: (line: string) => boolean, timeout?: Duration.Input) => Effect.Effect<string, Error>
}

/** The fields of a JSON log line, or `undefined` for any other line. */
export const parseLogLine = (line: string): Record<string, unknown> | undefined => {
  try {
    const value: unknown = JSON.parse(line)
    return Predicate.isObject(value) ? value : undefined
  } catch {
    return undefined
  }
}

/**
 * Starts the gateway process for the current scope (SIGKILL on close if it still runs) and waits until
 * both listeners are up. `env` adds to the test defaults (loopback, port 0, LOG_LEVEL info).
 */
export const spawnGateway = (
  env: TestEnv = {}
): Effect.Effect<GatewayProcess, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* dataDirWithAlice("smtp-gateway-process-")

    const lines: Array<string> = []
    let stderr = ""
    let partial = ""
    let exit: number | undefined
    const waiters = makeWaiters()

    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve"], {
          cwd: root,
          stdio: ["ignore", "pipe", "pipe"],
          env: {
            PATH: process.env.PATH ?? "",
            HOME: process.env.HOME ?? dataDir,
            ...loopbackEnv(dataDir),
            LOG_LEVEL: "info",
            ...env
          }
        })
      ),
      (child) => Effect.sync(() => void (child.exitCode === null && child.signalCode === null && child.kill("SIGKILL")))
    )
    child.stdout?.on("data", (chunk: Buffer) => {
      const text = partial + chunk.toString("utf8")
      const parts = text.split("\n")
      partial = parts.pop() ?? ""
      lines.push(...parts)
      waiters.wake()
    })
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
    })
    child.on("exit", (code, signal) => {
      if (partial !== "") lines.push(partial)
      partial = ""
      exit = code ?? (signal === null ? -1 : 128)
      waiters.wake()
    })

    const waitUntil = <A>(ready: () => A | undefined, what: string, timeout: Duration.Input) =>
      waiters.until(
        (): Result.Result<A, Error> | undefined => {
          const value = ready()
          if (value !== undefined) return Result.succeed(value)
          if (exit !== undefined) return Result.fail(new Error(`the gateway exited (${exit}) before ${what}; stderr: ${stderr}`))
          return undefined
        },
        timeout,
        () => new Error(`timed out waiting for ${what}; stdout:\n${lines.join("\n")}\nstderr: ${stderr}`)
      )

    const awaitLine = (ready: (line: string) => boolean, timeout: Duration.Input = "10 seconds") =>
      waitUntil(() => lines.find(ready), "a matching stdout line", timeout)

    const portOf = (message: string) =>
      awaitLine((line) => parseLogLine(line)?.message === message, "60 seconds").pipe(
        Effect.map((line) => Number(parseLogLine(line)?.port))
      )
    const httpPort = yield* portOf("admin HTTP listening")
    const smtpPort = yield* portOf("SMTP listening")

    return {
      pid: child.pid ?? 0,
      smtpPort,
      httpPort,
      dataDir,
      stdout: Effect.sync(() => [...lines]),
      stderr: Effect.sync(() => stderr),
      kill: (signal) => Effect.sync(() => void child.kill(signal)),
      exitCode: (timeout = "20 seconds") => waitUntil(() => exit, "the exit", timeout),
      awaitLine
    }
  })

/**
 * A real `redis-server` (Debian's package) for tests: started on a free loopback port in a temporary
 * directory, with no persistence, and stopped (directory removed) when the scope closes.
 * Test support only; fails with a clear message when redis-server is not installed.
 */
import * as childProcess from "node:child_process"
import { Effect, type Scope } from "effect"
import { closedPort, tempDir } from "./Local.ts"

export interface RedisServer {
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
}

const start = (port: number, dir: string) =>
  Effect.callback<childProcess.ChildProcess, Error>((resume) => {
    const child = childProcess.spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      if (output.includes("Ready to accept connections")) {
        child.stdout?.off("data", onData)
        child.stdout?.resume()
        resume(Effect.succeed(child))
      }
    }
    child.stdout?.on("data", onData)
    child.stderr?.resume()
    child.once("error", (error) =>
      resume(Effect.fail(new Error(`cannot start redis-server (apt-get install redis-server): ${error.message}`))))
    child.once("exit", (code) => resume(Effect.fail(new Error(`redis-server exited with ${code}: ${output.slice(-500)}`))))
  })

const stop = (child: childProcess.ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGTERM")
  })

/** Starts a redis-server for the current scope. */
export const startRedis: Effect.Effect<RedisServer, Error, Scope.Scope> = Effect.gen(function*() {
  const dir = yield* tempDir("redis-test-")
  const port = yield* closedPort
  yield* Effect.acquireRelease(start(port, dir), stop)
  return { port, url: `redis://127.0.0.1:${port}` }
})

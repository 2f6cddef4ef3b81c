/**
 * The real gateway (every production layer) on loopback, port 0, in a temporary DATA_DIR, with one
 * known user. Configured through the same environment variables as production; tests add their own.
 * Test support only.
 */
import * as path from "node:path"
import { Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { AdminHttp } from "../../src/admin/AdminHttp.ts"
import { addUser } from "../../src/auth/UsersFile.ts"
import { GatewayNoConfig } from "../../src/Gateway.ts"
import { SmtpListener } from "../../src/smtp/Listener.ts"
import { tempDir } from "./Local.ts"
import { configLayer, loopbackEnv, type TestEnv } from "./TestConfig.ts"

export const alice = {
  username: "alice",
  password: "alice-secret-password",
  senders: ["alice@example.com", "@example.org"],
  apiKey: "key-alice-0123456789"
} as const

/** Short delivery budgets, so failures are quick; limits high enough for 100 sessions from one address. */
export const quickEnv: Readonly<Record<string, string>> = {
  UPSTREAM_TIMEOUT: "2 seconds",
  DELIVERY_DEADLINE: "5 seconds",
  RETRY_MAX_ATTEMPTS: "2",
  RETRY_BASE_DELAY: "10 millis",
  AUTH_FAILURE_DELAY: "1 millis",
  MAX_CONNECTIONS: "1000",
  MAX_CONNECTIONS_PER_IP: "1000",
  RATE_LIMIT_PER_IP: "100000",
  RATE_LIMIT_PER_USER: "100000"
}

export interface TestGatewayHandle {
  readonly smtpPort: number
  readonly httpPort: number
  readonly dataDir: string
  readonly outboxDir: string
}

export { tempDir } from "./Local.ts"

/** A temporary DATA_DIR (removed with the scope) whose users file knows `alice`. */
export const dataDirWithAlice = (prefix: string) =>
  Effect.gen(function*() {
    const dataDir = yield* tempDir(prefix)
    yield* addUser(path.join(dataDir, "users.json"), {
      username: alice.username,
      password: Redacted.make(alice.password),
      senders: alice.senders,
      apiKey: Option.some(Redacted.make(alice.apiKey))
    })
    return dataDir
  })

/** Starts the gateway for the current scope; `env` adds to or overrides the test defaults. */
export const startGateway = (
  env: TestEnv = {}
): Effect.Effect<TestGatewayHandle, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* dataDirWithAlice("smtp-gateway-e2e-")
    const config = configLayer({ ...loopbackEnv(dataDir), LOG_LEVEL: "error", ...env })
    const context = yield* Layer.build(GatewayNoConfig.pipe(Layer.provide(config)))
    return {
      smtpPort: Context.get(context, SmtpListener).port,
      httpPort: Context.get(context, AdminHttp).port,
      dataDir,
      outboxDir: env.OUTBOX_DIR ?? path.join(dataDir, "outbox")
    }
  })

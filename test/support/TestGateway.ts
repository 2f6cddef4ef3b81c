/**
 * The real gateway (every production layer) on loopback, port 0, in a temporary DATA_DIR, with one
 * known user. Configured through the same environment variables as production; tests add their own.
 * Test support only.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ConfigProvider, Context, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { AdminHttp } from "../../src/admin/AdminHttp.ts"
import { addUser } from "../../src/auth/UsersFile.ts"
import { GatewayConfig } from "../../src/Config.ts"
import { GatewayNoConfig } from "../../src/Gateway.ts"
import { SmtpListener } from "../../src/smtp/Listener.ts"

export const alice = {
  username: "alice",
  password: "alice-secret-password",
  senders: ["alice@example.com", "@example.org"],
  apiKey: "key-alice-0123456789"
} as const

export interface TestGatewayHandle {
  readonly smtpPort: number
  readonly httpPort: number
  readonly dataDir: string
  readonly outboxDir: string
}

/** A temporary directory removed when the scope closes. */
export const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

/** Starts the gateway for the current scope; `env` adds to or overrides the test defaults. */
export const startGateway = (
  env: Readonly<Record<string, string>> = {}
): Effect.Effect<TestGatewayHandle, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* tempDir("smtp-gateway-e2e-")
    const usersFile = path.join(dataDir, "users.json")
    yield* addUser(usersFile, {
      username: alice.username,
      password: Redacted.make(alice.password),
      senders: alice.senders,
      apiKey: Option.some(Redacted.make(alice.apiKey))
    })
    const config = GatewayConfig.layer.pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
        env: {
          SMTP_HOST: "127.0.0.1",
          SMTP_PORT: "0",
          HTTP_HOST: "127.0.0.1",
          HTTP_PORT: "0",
          SMTP_HOSTNAME: "gateway.test",
          DATA_DIR: dataDir,
          LOG_LEVEL: "error",
          ...env
        }
      })))
    )
    const context = yield* Layer.build(GatewayNoConfig.pipe(Layer.provide(config)))
    return {
      smtpPort: Context.get(context, SmtpListener).port,
      httpPort: Context.get(context, AdminHttp).port,
      dataDir,
      outboxDir: env.OUTBOX_DIR ?? path.join(dataDir, "outbox")
    }
  })

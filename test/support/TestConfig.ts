/**
 * The one way tests configure the gateway: its real loader (src/Config.ts, the same checks and defaults
 * as production) over an environment the test gives, never process.env. Test support only.
 */
import { ConfigProvider, Effect, Layer } from "effect"
import { GatewayConfig, type GatewayConfigShape, loadGatewayConfig } from "../../src/Config.ts"

export type TestEnv = Readonly<Record<string, string>>

/** Where every test gateway listens and keeps its files: loopback, port 0, a known host name. */
export const loopbackEnv = (dataDir: string): TestEnv => ({
  SMTP_HOST: "127.0.0.1",
  SMTP_PORT: "0",
  HTTP_HOST: "127.0.0.1",
  HTTP_PORT: "0",
  SMTP_HOSTNAME: "gateway.test",
  DATA_DIR: dataDir
})

const provider = (env: TestEnv) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))

/** GatewayConfig read from exactly these variables. */
export const configLayer = (env: TestEnv = {}) => GatewayConfig.layer.pipe(Layer.provide(provider(env)))

/** The configuration these variables give; throws on a bad value (a mistake in the test). */
export const loadConfig = (env: TestEnv): GatewayConfigShape =>
  Effect.runSync(loadGatewayConfig.pipe(Effect.provide(provider(env))))

import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option, Redacted } from "effect"
import { loadGatewayConfig, processMemory } from "../src/Config.ts"

const load = (env: Record<string, string>) =>
  loadGatewayConfig.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))

describe("GatewayConfig", () => {
  it.effect("runs fully local with nothing configured", () =>
    Effect.gen(function*() {
      const config = yield* load({})
      assert.strictEqual(config.smtp.port, 587)
      assert.strictEqual(config.http.port, 8080)
      assert.strictEqual(config.auth.backend, "file")
      assert.strictEqual(config.upstream.kind, "outbox")
      assert.match(config.auth.usersFile, /data\/users\.json$/)
      assert.match(config.upstream.outboxDir, /data\/outbox$/)
      assert.isTrue(Option.isNone(config.tls.certPath))
      assert.isTrue(Duration.equals(config.delivery.deadline, Duration.seconds(30)))
      assert.isTrue(Duration.equals(config.auth.cacheTtl, Duration.minutes(15)))
      assert.strictEqual(config.limits.maxMessageSize, 26_214_400)
      assert.strictEqual(config.log.format, "json")
    }))

  it.effect("reads every kind of value", () =>
    Effect.gen(function*() {
      const config = yield* load({
        SMTP_PORT: "2525",
        DATA_DIR: "/srv/gw",
        AUTH_BACKEND: "http",
        AUTH_URL: "https://auth.example.com/verify",
        UPSTREAM: "http",
        UPSTREAM_URL: "https://api.example.com/messages",
        UPSTREAM_TIMEOUT: "2 seconds",
        RETRY_BASE_DELAY: "1 second",
        ALLOWLIST_CIDRS: "10.0.0.0/8, 192.168.1.7",
        REDIS_URL: "redis://:pw@redis:6379",
        ADMIN_TOKEN: "t0k3n"
      })
      assert.strictEqual(config.smtp.port, 2525)
      assert.strictEqual(config.auth.usersFile, "/srv/gw/users.json")
      assert.strictEqual(Option.getOrThrow(config.auth.url).href, "https://auth.example.com/verify")
      assert.isTrue(Duration.equals(config.delivery.attemptTimeout, Duration.seconds(2)))
      assert.isTrue(Duration.equals(config.delivery.baseDelay, Duration.seconds(1)))
      assert.deepStrictEqual(config.limits.allowlistCidrs, ["10.0.0.0/8", "192.168.1.7"])
      assert.strictEqual(Redacted.value(Option.getOrThrow(config.redisUrl)), "redis://:pw@redis:6379")
      assert.strictEqual(String(Option.getOrThrow(config.adminToken)), "<redacted>")
    }))

  it.effect("reports every bad variable at once, one line each, naming the variable and the fix", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({
        SMTP_PORT: "smtp",
        DELIVERY_DEADLINE: "30s",
        AUTH_BACKEND: "ldap",
        UPSTREAM: "http",
        TLS_CERT_PATH: "/etc/tls/cert.pem",
        LOG_FORMAT: "xml"
      }))
      const lines = error.problems
      assert.include(lines, "SMTP_PORT: \"smtp\" is not a port number from 0 to 65535; set a port such as 587")
      assert.include(lines, "DELIVERY_DEADLINE: \"30s\" is not a duration; write a duration like \"30 seconds\"")
      assert.include(lines, "AUTH_BACKEND: \"ldap\" is not one of file, http, cakemail; set file, http or cakemail")
      assert.include(lines, "UPSTREAM_URL: required when UPSTREAM=http; set the email API endpoint")
      assert.include(lines, "TLS_CERT_PATH, TLS_KEY_PATH: set both, or neither for a self-signed certificate")
      assert.include(lines, "LOG_FORMAT: \"xml\" is not one of json, pretty; set json or pretty")
      assert.strictEqual(lines.length, 6)
      assert.match(error.message, /^Invalid configuration:\n {2}/)
    }))

  it.effect("refuses a CIDR list entry that would match nothing: a prefix too long, an octet over 255, a word", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ TRUSTED_PROXIES: "10.0.0.0/8, 10.0.0.0/33, 999.1.1.1, beef, ::1/128, 10.1.2.3" }))
      assert.strictEqual(error.problems.length, 1)
      assert.match(error.problems[0]!, /^TRUSTED_PROXIES: "10\.0\.0\.0\/33", "999\.1\.1\.1", "beef" not CIDR/)
    }))

  it.effect("never echoes a secret it could not parse", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ REDIS_URL: "http://user:hunter2@redis" }))
      assert.notInclude(error.message, "hunter2")
      assert.include(error.message, "REDIS_URL")
    }))

  it.effect("refuses the Cakemail upstream without Cakemail authentication", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ UPSTREAM: "cakemail" }))
      assert.match(error.problems[0]!, /^UPSTREAM: cakemail needs AUTH_BACKEND=cakemail/)
    }))

  it.effect("holds messages in a quarter of the process's memory by default, never less than one message of MAX_MESSAGE_SIZE", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* load({})).limits.maxMessageMemory, Math.max(Math.floor(processMemory() / 4), 26_214_400))
      assert.strictEqual((yield* load({ MAX_MESSAGE_MEMORY: "50%" })).limits.maxMessageMemory, Math.floor(processMemory() / 2))
      assert.strictEqual((yield* load({ MAX_MESSAGE_MEMORY: "104857600" })).limits.maxMessageMemory, 104_857_600)
    }))

  it.effect("refuses a MAX_MESSAGE_MEMORY that could never hold a message of MAX_MESSAGE_SIZE, or is not a size", () =>
    Effect.gen(function*() {
      const small = yield* Effect.flip(load({ MAX_MESSAGE_SIZE: "2000000", MAX_MESSAGE_MEMORY: "1000000" }))
      assert.deepStrictEqual(small.problems, [
        "MAX_MESSAGE_MEMORY: 1000000 bytes is less than MAX_MESSAGE_SIZE (2000000), so a message of the largest size could never be taken; set at least 2000000"
      ])
      const bad = yield* Effect.flip(load({ MAX_MESSAGE_MEMORY: "0%" }))
      assert.match(bad.problems[0]!, /^MAX_MESSAGE_MEMORY: "0%" is not a percentage above 0 and at most 100; set a size in bytes or a percentage/)
      const words = yield* Effect.flip(load({ MAX_MESSAGE_MEMORY: "lots" }))
      assert.match(words.problems[0]!, /^MAX_MESSAGE_MEMORY: "lots" is not a size in bytes or a percentage like 25%/)
    }))
})

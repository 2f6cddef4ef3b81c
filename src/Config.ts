/**
 * GatewayConfig: every setting of design.md §4, read once from the environment (through Effect's
 * ConfigProvider, so tests pass their own) into one typed value. Every bad value is reported at once,
 * one line per variable, naming it and the fix; secrets stay Redacted.
 */
import * as os from "node:os"
import * as path from "node:path"
import { Config, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { AuthBackendName } from "./domain/Principal.ts"
import { defaultMimeLimits, defaultParseTimeout } from "./message/MimeLimits.ts"
import { parseCidr } from "./policy/Cidr.ts"

export type UpstreamKind = "outbox" | "http" | "cakemail"
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error"

export interface GatewayConfigShape {
  readonly smtp: {
    readonly host: string
    readonly port: number
    readonly smtpsPort: Option.Option<number>
    readonly hostname: string
  }
  readonly http: { readonly host: string; readonly port: number }
  readonly dataDir: string
  readonly tls: { readonly certPath: Option.Option<string>; readonly keyPath: Option.Option<string>; readonly dir: string }
  readonly auth: {
    readonly backend: AuthBackendName
    readonly usersFile: string
    readonly url: Option.Option<URL>
    readonly cacheTtl: Duration.Duration
    readonly failureLimit: number
    /** The delay before the first `535` of an IP+username; it doubles with each failure (capped at 8 s). */
    readonly failureDelay: Duration.Duration
  }
  readonly upstream: {
    readonly kind: UpstreamKind
    readonly outboxDir: string
    readonly url: Option.Option<URL>
  }
  readonly cakemail: {
    readonly apiUrl: URL
    readonly emailType: string
    /** CAKEMAIL_UNSUPPORTED_PARTS: refuse (554) or drop attachments the API cannot carry. */
    readonly unsupportedParts: "reject" | "drop"
  }
  readonly delivery: {
    readonly deadline: Duration.Duration
    readonly attemptTimeout: Duration.Duration
    readonly maxAttempts: number
    readonly baseDelay: Duration.Duration
    readonly dedupeWindow: Duration.Duration
  }
  readonly limits: {
    readonly maxMessageSize: number
    readonly maxRecipients: number
    readonly maxConnections: number
    readonly maxConnectionsPerIp: number
    readonly rateLimitPerIp: number
    readonly rateLimitPerUser: number
    readonly allowlistCidrs: ReadonlyArray<string>
    readonly idleTimeout: Duration.Duration
    readonly tlsHandshakeTimeout: Duration.Duration
    /** A connection is closed (`421 4.4.2`) this long after it opened, once no delivery is in flight. */
    readonly sessionMaxLifetime: Duration.Duration
    /** In DATA, at least this many bytes per second, measured over each `dataRateWindow`. */
    readonly dataMinRate: number
    readonly dataRateWindow: Duration.Duration
    /** Transactions (MAIL commands) per connection. */
    readonly maxMessagesPerSession: number
    /** Bytes of messages held at once, across every session (smtp/MessageMemory.ts); at least maxMessageSize. */
    readonly maxMessageMemory: number
  }
  /** Limits on hostile MIME, checked before mailparser runs (message/MimeLimits.ts). */
  readonly mime: {
    readonly maxParts: number
    readonly maxDepth: number
    /** Bytes of one header section (the message's or a part's). */
    readonly maxHeaderBytes: number
    /** Header fields in one header section. */
    readonly maxHeaders: number
    /** Bytes of one line, without its CRLF. */
    readonly maxLineLength: number
    readonly parseTimeout: Duration.Duration
  }
  readonly shutdownDrainTimeout: Duration.Duration
  readonly redisUrl: Option.Option<Redacted.Redacted<string>>
  readonly trustedProxies: ReadonlyArray<string>
  readonly log: { readonly level: LogLevel; readonly format: "json" | "pretty" }
  readonly otel: { readonly endpoint: Option.Option<URL>; readonly serviceName: string }
  readonly capture: {
    readonly dir: Option.Option<string>
    readonly sampleRate: number
    readonly body: "keep" | "digest"
    /** CAPTURE_USERS: capture only sessions that authenticated as one of these users (empty: everyone). */
    readonly users: ReadonlyArray<string>
    /** CAPTURE_CLIENTS: capture only sessions from these addresses or CIDRs (empty: every client). */
    readonly clients: ReadonlyArray<string>
  }
  readonly adminToken: Option.Option<Redacted.Redacted<string>>
}

/** Startup fails with this when any variable is wrong: one line per problem. */
export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", {
  problems: Schema.Array(Schema.String)
}) {
  override get message() {
    return `Invalid configuration:\n${this.problems.map((p) => `  ${p}`).join("\n")}`
  }
}

/** Reads a variable as a raw string; empty counts as unset. */
const raw = (name: string) =>
  Config.option(Config.String(name)).pipe(
    Effect.map((value) => Option.filter(Option.map(value, (s) => s.trim()), (s) => s !== "")),
    Effect.orElseSucceed(() => Option.none<string>())
  )

type Check<A> = (value: string) => { readonly ok: A } | { readonly problem: string }

const integer = (min: number, max: number, what = "a whole number"): Check<number> => (value) => {
  const n = Number(value)
  return /^\d+$/.test(value) && Number.isSafeInteger(n) && n >= min && n <= max
    ? { ok: n }
    : { problem: `"${value}" is not ${what} from ${min} to ${max}` }
}
const port = integer(0, 65535, "a port number")

/** The memory this process may use: its cgroup's limit (a container's), else the machine's. */
export const processMemory = (): number => {
  const constrained = process.constrainedMemory() // 0, or 2^64 on some systems, when unconstrained
  return constrained > 0 ? Math.min(constrained, os.totalmem()) : os.totalmem()
}

/** A size in bytes, or a percentage of `processMemory()` (`25%`), as bytes. */
const bytesOrPercent = (value: string): { readonly ok: number } | { readonly problem: string } => {
  const percent = /^(\d+(?:\.\d+)?)%$/.exec(value)
  if (percent !== null) {
    const p = Number(percent[1])
    return p > 0 && p <= 100
      ? { ok: Math.floor(processMemory() * p / 100) }
      : { problem: `"${value}" is not a percentage above 0 and at most 100` }
  }
  return integer(1024, Number.MAX_SAFE_INTEGER, "a size in bytes or a percentage like 25%")(value)
}
const fraction: Check<number> = (value) => {
  const n = Number(value)
  return value !== "" && Number.isFinite(n) && n >= 0 && n <= 1
    ? { ok: n }
    : { problem: `"${value}" is not a number from 0 to 1` }
}
const duration: Check<Duration.Duration> = (value) => {
  const d = /^\d+(\.\d+)? (nanos?|micros?|millis?|seconds?|minutes?|hours?|days?|weeks?)$/.test(value)
    ? Duration.fromInput(value as Duration.Input)
    : Option.none()
  return Option.isSome(d)
    ? { ok: d.value }
    : { problem: `"${value}" is not a duration` }
}
const url: Check<URL> = (value) => {
  try {
    const u = new URL(value)
    if (u.protocol === "http:" || u.protocol === "https:") return { ok: u }
  } catch {
    // reported below
  }
  return { problem: `"${value}" is not an http(s) URL` }
}
const oneOf = <const A extends string>(choices: ReadonlyArray<A>): Check<A> => (value) => {
  const lower = value.toLowerCase()
  return (choices as ReadonlyArray<string>).includes(lower)
    ? { ok: lower as A }
    : { problem: `"${value}" is not one of ${choices.join(", ")}` }
}
const text: Check<string> = (value) => ({ ok: value })
const cidr: Check<ReadonlyArray<string>> = (value) => {
  const items = value.split(/[\s,]+/).filter((s) => s !== "")
  const bad = items.filter((c) => parseCidr(c) === undefined)
  return bad.length === 0 ? { ok: items } : { problem: `${bad.map((b) => `"${b}"`).join(", ")} not CIDR (like 10.0.0.0/8)` }
}

/** Loads the whole configuration; fails with every problem at once. */
export const loadGatewayConfig: Effect.Effect<GatewayConfigShape, ConfigInvalid> = Effect.gen(function*() {
  const problems: Array<string> = []
  const read = <A>(name: string, check: Check<A>, fix: string) =>
    Effect.map(raw(name), (value): Option.Option<A> => {
      if (Option.isNone(value)) return Option.none()
      const result = check(value.value)
      if ("ok" in result) return Option.some(result.ok)
      problems.push(`${name}: ${result.problem}; ${fix}`)
      return Option.none()
    })
  const withDefault = <A>(o: Option.Option<A>, fallback: A) => Option.getOrElse(o, () => fallback)

  const dataDir = path.resolve(withDefault(yield* read("DATA_DIR", text, "set a writable directory"), "./data"))
  const durationFix = "write a duration like \"30 seconds\""
  const countFix = "set a whole number"

  const authBackend = withDefault(
    yield* read("AUTH_BACKEND", oneOf(["file", "http", "cakemail"] as const), "set file, http or cakemail"),
    "file"
  )
  const authUrl = yield* read("AUTH_URL", url, "set the auth API endpoint, like https://auth.example.com/verify")
  const upstreamKind = withDefault(
    yield* read("UPSTREAM", oneOf(["outbox", "http", "cakemail"] as const), "set outbox, http or cakemail"),
    "outbox"
  )
  const upstreamUrl = yield* read("UPSTREAM_URL", url, "set the email API endpoint, like https://api.example.com/messages")
  const certPath = yield* read("TLS_CERT_PATH", text, "set the PEM certificate path")
  const keyPath = yield* read("TLS_KEY_PATH", text, "set the PEM key path")

  if (authBackend === "http" && Option.isNone(authUrl)) {
    problems.push("AUTH_URL: required when AUTH_BACKEND=http; set the auth API endpoint")
  }
  if (upstreamKind === "http" && Option.isNone(upstreamUrl)) {
    problems.push("UPSTREAM_URL: required when UPSTREAM=http; set the email API endpoint")
  }
  if (upstreamKind === "cakemail" && authBackend !== "cakemail") {
    problems.push("UPSTREAM: cakemail needs AUTH_BACKEND=cakemail (each email is sent with the client's Cakemail token)")
  }
  if (Option.isSome(certPath) !== Option.isSome(keyPath)) {
    problems.push("TLS_CERT_PATH, TLS_KEY_PATH: set both, or neither for a self-signed certificate")
  }

  const maxMessageSize = withDefault(
    yield* read("MAX_MESSAGE_SIZE", integer(1024, 1_073_741_824, "a size in bytes"), "set a size in bytes"),
    26_214_400
  )
  const memoryLimit = yield* read(
    "MAX_MESSAGE_MEMORY",
    bytesOrPercent,
    "set a size in bytes or a percentage of the process's memory, like 25%"
  )
  if (Option.isSome(memoryLimit) && memoryLimit.value < maxMessageSize) {
    problems.push(
      `MAX_MESSAGE_MEMORY: ${memoryLimit.value} bytes is less than MAX_MESSAGE_SIZE (${maxMessageSize}), so a message of the largest size could never be taken; set at least ${maxMessageSize}`
    )
  }
  // by default a quarter of the process's memory, and never less than one message of the largest size
  const maxMessageMemory = Option.getOrElse(memoryLimit, () => Math.max(Math.floor(processMemory() / 4), maxMessageSize))

  const config: GatewayConfigShape = {
    smtp: {
      host: withDefault(yield* read("SMTP_HOST", text, "set an address to listen on"), "0.0.0.0"),
      port: withDefault(yield* read("SMTP_PORT", port, "set a port such as 587"), 587),
      smtpsPort: yield* read("SMTPS_PORT", port, "set a port such as 465, or leave it unset"),
      hostname: withDefault(yield* read("SMTP_HOSTNAME", text, "set the public host name"), os.hostname())
    },
    http: {
      host: withDefault(yield* read("HTTP_HOST", text, "set an address to listen on"), "0.0.0.0"),
      port: withDefault(yield* read("HTTP_PORT", port, "set a port such as 8080"), 8080)
    },
    dataDir,
    tls: { certPath, keyPath, dir: path.join(dataDir, "tls") },
    auth: {
      backend: authBackend,
      usersFile: path.resolve(
        withDefault(yield* read("AUTH_USERS_FILE", text, "set a path"), path.join(dataDir, "users.json"))
      ),
      url: authUrl,
      cacheTtl: withDefault(yield* read("AUTH_CACHE_TTL", duration, durationFix), Duration.minutes(15)),
      failureLimit: withDefault(yield* read("AUTH_FAILURE_LIMIT", integer(1, 1_000_000), countFix), 5),
      failureDelay: withDefault(yield* read("AUTH_FAILURE_DELAY", duration, durationFix), Duration.millis(500))
    },
    upstream: {
      kind: upstreamKind,
      outboxDir: path.resolve(
        withDefault(yield* read("OUTBOX_DIR", text, "set a writable directory"), path.join(dataDir, "outbox"))
      ),
      url: upstreamUrl
    },
    cakemail: {
      apiUrl: withDefault(
        yield* read("CAKEMAIL_API_URL", url, "set the Cakemail API base URL"),
        new URL("https://api.cakemail.dev")
      ),
      emailType: withDefault(
        yield* read("CAKEMAIL_EMAIL_TYPE", oneOf(["transactional", "marketing"] as const), "set transactional or marketing"),
        "transactional"
      ),
      unsupportedParts: withDefault(
        yield* read(
          "CAKEMAIL_UNSUPPORTED_PARTS",
          oneOf(["reject", "drop"] as const),
          "set reject (refuse the message with 554) or drop (send it without those parts)"
        ),
        "reject"
      )
    },
    delivery: {
      deadline: withDefault(yield* read("DELIVERY_DEADLINE", duration, durationFix), Duration.seconds(30)),
      attemptTimeout: withDefault(yield* read("UPSTREAM_TIMEOUT", duration, durationFix), Duration.seconds(10)),
      maxAttempts: withDefault(yield* read("RETRY_MAX_ATTEMPTS", integer(1, 100), countFix), 3),
      baseDelay: withDefault(yield* read("RETRY_BASE_DELAY", duration, durationFix), Duration.millis(250)),
      dedupeWindow: withDefault(yield* read("DEDUPE_WINDOW", duration, durationFix), Duration.hours(24))
    },
    limits: {
      maxMessageSize,
      maxRecipients: withDefault(yield* read("MAX_RECIPIENTS", integer(1, 100_000), countFix), 100),
      maxConnections: withDefault(yield* read("MAX_CONNECTIONS", integer(1, 1_000_000), countFix), 1000),
      maxConnectionsPerIp: withDefault(yield* read("MAX_CONNECTIONS_PER_IP", integer(1, 1_000_000), countFix), 10),
      rateLimitPerIp: withDefault(yield* read("RATE_LIMIT_PER_IP", integer(1, 1_000_000_000), countFix), 100),
      rateLimitPerUser: withDefault(yield* read("RATE_LIMIT_PER_USER", integer(1, 1_000_000_000), countFix), 600),
      allowlistCidrs: withDefault(yield* read("ALLOWLIST_CIDRS", cidr, "list CIDRs separated by commas"), []),
      idleTimeout: withDefault(yield* read("IDLE_TIMEOUT", duration, durationFix), Duration.minutes(5)),
      tlsHandshakeTimeout: withDefault(yield* read("TLS_HANDSHAKE_TIMEOUT", duration, durationFix), Duration.seconds(10)),
      sessionMaxLifetime: withDefault(yield* read("SESSION_MAX_LIFETIME", duration, durationFix), Duration.minutes(30)),
      dataMinRate: withDefault(
        yield* read("DATA_MIN_RATE", integer(0, 1_073_741_824, "a number of bytes per second"), "set bytes per second (0 turns the check off)"),
        128
      ),
      dataRateWindow: withDefault(yield* read("DATA_RATE_WINDOW", duration, durationFix), Duration.seconds(30)),
      maxMessagesPerSession: withDefault(yield* read("MAX_MESSAGES_PER_SESSION", integer(1, 1_000_000), countFix), 100),
      maxMessageMemory
    },
    mime: {
      maxParts: withDefault(yield* read("MIME_MAX_PARTS", integer(1, 1_000_000), countFix), defaultMimeLimits.maxParts),
      maxDepth: withDefault(yield* read("MIME_MAX_DEPTH", integer(1, 1000), countFix), defaultMimeLimits.maxDepth),
      maxHeaderBytes: withDefault(
        yield* read("MIME_MAX_HEADER_SIZE", integer(1024, 1_073_741_824, "a size in bytes"), "set a size in bytes"),
        defaultMimeLimits.maxHeaderBytes
      ),
      maxHeaders: withDefault(yield* read("MIME_MAX_HEADERS", integer(1, 1_000_000), countFix), defaultMimeLimits.maxHeaders),
      maxLineLength: withDefault(
        yield* read("MIME_MAX_LINE_LENGTH", integer(998, 1_073_741_824, "a size in bytes"), "set a size in bytes"),
        defaultMimeLimits.maxLineLength
      ),
      parseTimeout: withDefault(yield* read("PARSE_TIMEOUT", duration, durationFix), Duration.fromInputUnsafe(defaultParseTimeout))
    },
    shutdownDrainTimeout: withDefault(yield* read("SHUTDOWN_DRAIN_TIMEOUT", duration, durationFix), Duration.seconds(30)),
    redisUrl: Option.map(
      yield* read("REDIS_URL", (v) => /^rediss?:\/\//.test(v) ? { ok: v } : { problem: "is not a redis:// or rediss:// URL" }, "set it like redis://redis:6379"),
      Redacted.make
    ),
    trustedProxies: withDefault(yield* read("TRUSTED_PROXIES", cidr, "list addresses or CIDRs separated by commas"), []),
    log: {
      level: withDefault(
        yield* read("LOG_LEVEL", oneOf(["trace", "debug", "info", "warn", "error"] as const), "set trace, debug, info, warn or error"),
        "info"
      ),
      format: withDefault(yield* read("LOG_FORMAT", oneOf(["json", "pretty"] as const), "set json or pretty"), "json")
    },
    otel: {
      endpoint: yield* read("OTEL_EXPORTER_OTLP_ENDPOINT", url, "set the collector's OTLP/HTTP URL, like http://otel-collector:4318"),
      serviceName: withDefault(yield* read("OTEL_SERVICE_NAME", text, "set a service name"), "smtp-gateway")
    },
    capture: {
      dir: Option.map(yield* read("CAPTURE_DIR", text, "set a writable directory"), (d) => path.resolve(d)),
      sampleRate: withDefault(yield* read("CAPTURE_SAMPLE_RATE", fraction, "set a number from 0 to 1"), 1),
      body: withDefault(yield* read("CAPTURE_BODY", oneOf(["keep", "digest"] as const), "set keep or digest"), "keep"),
      users: withDefault(
        yield* read("CAPTURE_USERS", (v) => ({ ok: v.split(/[\s,]+/).filter((u) => u !== "") }), "list user names separated by commas"),
        []
      ),
      clients: withDefault(yield* read("CAPTURE_CLIENTS", cidr, "list client addresses or CIDRs separated by commas"), [])
    },
    adminToken: Option.map(yield* read("ADMIN_TOKEN", text, "set a long random token"), Redacted.make)
  }
  if (problems.length > 0) return yield* new ConfigInvalid({ problems })
  return config
})

export class GatewayConfig extends Context.Service<GatewayConfig, GatewayConfigShape>()("smtp-gateway/Config") {
  /** Reads the environment (or the ConfigProvider in context). */
  static readonly layer = Layer.effect(GatewayConfig, loadGatewayConfig)
  /** A fixed configuration, for tests. */
  static readonly layerWith = (config: GatewayConfigShape) => Layer.succeed(GatewayConfig, config)
}

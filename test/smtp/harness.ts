/**
 * The SMTP listener on loopback port 0 with the real Limits and EnvelopePolicy, and doubles for
 * authentication and submission that record what reached them; a configuration builder with small
 * limits. Test support for the hardening tests (test/smtp, test/fuzz); not a test itself.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Duration, Effect, Layer, Option, Redacted, References, Scope } from "effect"
import { Readiness } from "../../src/admin/Readiness.ts"
import { Authenticator } from "../../src/auth/Authenticator.ts"
import { AuthError, InvalidCredentials } from "../../src/auth/CredentialStore.ts"
import { GatewayConfig, type GatewayConfigShape } from "../../src/Config.ts"
import type { SenderRule } from "../../src/domain/Address.ts"
import { Principal } from "../../src/domain/Principal.ts"
import { Replies } from "../../src/domain/Reply.ts"
import { EnvelopePolicy } from "../../src/policy/EnvelopePolicy.ts"
import { Limits } from "../../src/policy/Limits.ts"
import { Senders } from "../../src/policy/Senders.ts"
import { SmtpListener } from "../../src/smtp/Listener.ts"
import { Certificates } from "../../src/smtp/Tls.ts"
import { Submission, type SubmissionInput } from "../../src/Submission.ts"
import type { SmtpClient } from "../support/SmtpClient.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-hardening-"))

export interface ConfigOverrides {
  readonly smtp?: Partial<GatewayConfigShape["smtp"]>
  readonly auth?: Partial<GatewayConfigShape["auth"]>
  readonly limits?: Partial<GatewayConfigShape["limits"]>
  readonly mime?: Partial<GatewayConfigShape["mime"]>
  readonly tls?: Partial<GatewayConfigShape["tls"]>
  readonly trustedProxies?: ReadonlyArray<string>
}

/** A full configuration on loopback port 0 with small limits; checks that slow tests down are off. */
export const testConfig = (o: ConfigOverrides = {}): GatewayConfigShape => ({
  smtp: { host: "127.0.0.1", port: 0, smtpsPort: Option.none(), hostname: "mx.test", ...o.smtp },
  http: { host: "127.0.0.1", port: 0 },
  dataDir: dir,
  tls: { certPath: Option.none(), keyPath: Option.none(), dir, ...o.tls },
  auth: {
    backend: "file",
    usersFile: path.join(dir, "users.json"),
    url: Option.none(),
    cacheTtl: Duration.minutes(15),
    failureLimit: 5,
    failureDelay: Duration.millis(1),
    ...o.auth
  },
  upstream: { kind: "outbox", outboxDir: path.join(dir, "outbox"), url: Option.none() },
  cakemail: { apiUrl: new URL("https://api.cakemail.dev"), emailType: "transactional" },
  delivery: {
    deadline: Duration.seconds(30),
    attemptTimeout: Duration.seconds(10),
    maxAttempts: 3,
    baseDelay: Duration.millis(250),
    dedupeWindow: Duration.hours(24)
  },
  limits: {
    maxMessageSize: 100_000,
    maxRecipients: 10,
    maxConnections: 100,
    maxConnectionsPerIp: 50,
    rateLimitPerIp: 1000,
    rateLimitPerUser: 1000,
    allowlistCidrs: [],
    idleTimeout: Duration.seconds(30),
    tlsHandshakeTimeout: Duration.seconds(10),
    sessionMaxLifetime: Duration.minutes(30),
    dataMinRate: 0,
    dataRateWindow: Duration.seconds(30),
    maxMessagesPerSession: 100,
    ...o.limits
  },
  mime: {
    maxParts: 1000,
    maxDepth: 10,
    maxHeaderBytes: 131_072,
    maxHeaders: 500,
    maxLineLength: 65_536,
    parseTimeout: Duration.seconds(10),
    ...o.mime
  },
  shutdownDrainTimeout: Duration.seconds(1),
  redisUrl: Option.none(),
  trustedProxies: o.trustedProxies ?? [],
  log: { level: "info", format: "json" },
  otel: { endpoint: Option.none(), serviceName: "smtp-gateway" },
  capture: { dir: Option.none(), sampleRate: 1, body: "keep", users: [], clients: [] },
  adminToken: Option.none()
})

/** What the doubles saw. */
export class Seen extends Context.Service<Seen, {
  /** Usernames the Authenticator was asked about, in order. */
  readonly verified: Array<string>
  readonly submissions: Array<SubmissionInput>
}>()("test/smtp/harness/Seen") {
  static readonly layer = Layer.sync(Seen, () => ({ verified: [], submissions: [] }))
}

export const principal = (username: string) =>
  new Principal({
    username,
    senders: Option.some([`${username}@example.test` as SenderRule]),
    apiKey: Option.none(),
    backend: "file",
    account: Option.none(),
    expiresAt: Option.none()
  })

/** Any user whose password is "secret" is accepted (as `<user>@example.test`); anything else is refused. */
const AuthenticatorDouble = Layer.effect(
  Authenticator,
  Effect.gen(function*() {
    const seen = yield* Seen
    return Authenticator.of({
      verify: (credentials) =>
        Effect.suspend(() => {
          seen.verified.push(credentials.username)
          return Redacted.value(credentials.password) === "secret"
            ? Effect.succeed(principal(credentials.username))
            : Effect.fail(new AuthError({ reason: new InvalidCredentials({}) }))
        }),
      invalidate: () => Effect.void
    })
  })
)

const SubmissionDouble = Layer.effect(
  Submission,
  Effect.gen(function*() {
    const seen = yield* Seen
    return Submission.of({
      submit: (input) =>
        Effect.sync(() => {
          seen.submissions.push(input)
          return Replies.accepted(`TEST${seen.submissions.length}`)
        })
    })
  })
)

/** The listener with real policy and limits (memory) and recording doubles. */
export const listenerLayer = (config: GatewayConfigShape, certificates = Certificates.layer) =>
  SmtpListener.layer.pipe(
    Layer.provideMerge(Readiness.layer),
    Layer.provide(certificates),
    Layer.provide(EnvelopePolicy.layerNoDeps.pipe(Layer.provide(Senders.layerPrincipal))),
    Layer.provideMerge(Limits.layerMemory),
    Layer.provide(Layer.mergeAll(AuthenticatorDouble, SubmissionDouble)),
    Layer.provideMerge(Seen.layer),
    Layer.provide(GatewayConfig.layerWith(config)),
    Layer.provide(Layer.succeed(References.MinimumLogLevel, "Error"))
  )

/** Starts a listener in a scope of its own (closed by the test's scope). */
export const startListener = (config: GatewayConfigShape, certificates = Certificates.layer) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer((exit) => Scope.close(scope, exit))
    const context = yield* Layer.buildWithScope(listenerLayer(config, certificates), scope)
    return { listener: Context.get(context, SmtpListener), seen: Context.get(context, Seen) }
  })

export const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
export const plain = (user: string, password: string) => b64(`\0${user}\0${password}`)

/** Greeting, EHLO, STARTTLS, EHLO on a raw client. */
export const secure = (client: SmtpClient) =>
  Effect.gen(function*() {
    yield* client.readReply
    yield* client.sendLine("EHLO client.test")
    yield* client.readReply
    yield* client.sendLine("STARTTLS")
    yield* client.readReply
    yield* client.startTls
    yield* client.sendLine("EHLO client.test")
    yield* client.readReply
  })

/** `secure`, then AUTH PLAIN; gives the reply's last line. */
export const auth = (client: SmtpClient, user: string, password: string) =>
  Effect.gen(function*() {
    yield* client.sendLine(`AUTH PLAIN ${plain(user, password)}`)
    return (yield* client.readReply).last
  })

/** Sends one whole transaction (pipelined) and gives the reply lines of MAIL, RCPT, DATA and the message. */
export const transaction = (client: SmtpClient, user: string, body = "Subject: t\r\n\r\nhi\r\n") =>
  Effect.gen(function*() {
    yield* client.write(`MAIL FROM:<${user}@example.test>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n`)
    const mail = (yield* client.readReply).last
    const rcpt = (yield* client.readReply).last
    const data = (yield* client.readReply).last
    if (!data.startsWith("354")) return [mail, rcpt, data]
    yield* client.write(`${body}.\r\n`)
    return [mail, rcpt, data, (yield* client.readReply).last]
  })

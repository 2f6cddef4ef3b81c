/**
 * The SMTP listener on loopback port 0 with the real Limits and EnvelopePolicy, and doubles for
 * authentication and submission that record what reached them; a configuration builder with small
 * limits. Test support for the hardening tests (test/smtp, test/fuzz); not a test itself.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Layer, Option, Redacted, References, Scope } from "effect"
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
import { MessageMemory } from "../../src/smtp/MessageMemory.ts"
import { Certificates } from "../../src/smtp/Tls.ts"
import { Submission, type SubmissionInput } from "../../src/Submission.ts"
import type { SmtpClient } from "../support/SmtpClient.ts"
import { loadConfig, loopbackEnv, type TestEnv } from "../support/TestConfig.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-hardening-"))

/**
 * A full configuration from the real loader: loopback port 0, host name mx.test, small limits, and the
 * checks that slow tests down off (no auth failure delay, no DATA rate); `env` adds to or overrides it.
 */
export const testConfig = (env: TestEnv = {}): GatewayConfigShape =>
  loadConfig({
    ...loopbackEnv(dir),
    SMTP_HOSTNAME: "mx.test",
    AUTH_FAILURE_DELAY: "1 millis",
    MAX_MESSAGE_SIZE: "100000",
    MAX_RECIPIENTS: "10",
    MAX_CONNECTIONS: "100",
    MAX_CONNECTIONS_PER_IP: "50",
    RATE_LIMIT_PER_IP: "1000",
    RATE_LIMIT_PER_USER: "1000",
    IDLE_TIMEOUT: "30 seconds",
    DATA_MIN_RATE: "0",
    SHUTDOWN_DRAIN_TIMEOUT: "1 second",
    ...env
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

/** Any user whose password is "secret" is accepted (as `<user>@example.test`); "crash" is a defect; anything else is refused. */
const AuthenticatorDouble = Layer.effect(
  Authenticator,
  Effect.gen(function*() {
    const seen = yield* Seen
    return Authenticator.of({
      verify: (credentials) =>
        Effect.suspend(() => {
          seen.verified.push(credentials.username)
          if (credentials.username === "crash") return Effect.die(new Error("the auth double broke"))
          return Redacted.value(credentials.password) === "secret"
            ? Effect.succeed(principal(credentials.username))
            : Effect.fail(new AuthError({ reason: new InvalidCredentials({}) }))
        }),
      invalidate: () => Effect.void
    })
  })
)

/** Records every submission; a recipient `slow@…` takes 300 ms, `hang@…` never answers. */
const SubmissionDouble = Layer.effect(
  Submission,
  Effect.gen(function*() {
    const seen = yield* Seen
    return Submission.of({
      submit: (input) =>
        Effect.gen(function*() {
          if (input.envelope.rcptTo.some((r) => r.startsWith("hang@"))) return yield* Effect.never
          if (input.envelope.rcptTo.some((r) => r.startsWith("slow@"))) yield* Effect.sleep("300 millis")
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
    Layer.provideMerge(MessageMemory.layer),
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
    return {
      listener: Context.get(context, SmtpListener),
      seen: Context.get(context, Seen),
      memory: Context.get(context, MessageMemory)
    }
  })

export const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")
export const plain = (user: string, password: string, authzid = "") => b64(`${authzid}\0${user}\0${password}`)

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

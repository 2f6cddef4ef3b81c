/**
 * What the Cakemail tests share: the gateway's Cakemail services wired to a FakeCakemail on loopback
 * (fast retry policy, short timeouts), credentials, and a canonical message to vary. Test code only.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { type Duration, Effect, Layer, Option, Redacted, type Scope } from "effect"
import { CakemailSenders, type CakemailSendersOptions, layerCakemailCredentialStore } from "../../src/auth/CakemailAuth.ts"
import { CredentialStore } from "../../src/auth/CredentialStore.ts"
import { CakemailApi, type CallPolicy } from "../../src/cakemail/CakemailApi.ts"
import { type CakemailUpstreamOptions, layerCakemailUpstreamWith } from "../../src/delivery/CakemailUpstream.ts"
import { Upstream } from "../../src/delivery/Upstream.ts"
import type { Mailbox } from "../../src/domain/Address.ts"
import type { CanonicalMessage } from "../../src/domain/Message.ts"
import { Credentials, type Principal } from "../../src/domain/Principal.ts"
import { FakeCakemail, type FakeCakemailHandle, type FakeCakemailOptions } from "../support/FakeCakemail.ts"

export const fastPolicy: CallPolicy = { timeout: "500 millis", retries: 2, backoff: "10 millis" }

export interface HarnessOptions {
  readonly fake?: FakeCakemailOptions
  readonly policy?: CallPolicy
  readonly submitTimeout?: Duration.Input
  readonly senders?: CakemailSendersOptions
  readonly upstream?: Partial<CakemailUpstreamOptions>
}

export type Services = CakemailApi | CredentialStore | CakemailSenders | Upstream

/** Runs `body` against a fresh FakeCakemail and the gateway's Cakemail services pointed at it. */
export const withCakemail = <A, E>(
  body: (fake: FakeCakemailHandle) => Effect.Effect<A, E, Services>,
  options: HarnessOptions = {}
): Effect.Effect<A, E, Scope.Scope> =>
  Effect.gen(function*() {
    const fake = yield* FakeCakemail.make(options.fake)
    const api = CakemailApi.layerWith({
      baseUrl: new URL(fake.url),
      policy: options.policy ?? fastPolicy,
      submitTimeout: options.submitTimeout ?? "1 second",
      sendersPerPage: 50
    }).pipe(Layer.provide(NodeHttpClient.layerNodeHttpOptions({ keepAlive: true, maxSockets: 10 })))
    const senders = CakemailSenders.layerWith(options.senders ?? { minRefreshInterval: "0 millis" })
    const upstream = layerCakemailUpstreamWith({
      emailType: options.upstream?.emailType ?? "transactional",
      dropUnsupportedParts: options.upstream?.dropUnsupportedParts ?? false
    })
    const services = Layer.mergeAll(layerCakemailCredentialStore, upstream.pipe(Layer.provideMerge(senders))).pipe(
      Layer.provideMerge(api)
    )
    return yield* body(fake).pipe(Effect.provide(services))
  })

export const credentials = (username: string, password: string) =>
  new Credentials({ username, password: Redacted.make(password), authzid: Option.none(), method: "PLAIN" })

export const alice = credentials("alice@example.test", "alice-secret")

/** Logs in through the CredentialStore (the Cakemail backend). */
export const login = (c: Credentials = alice) => CredentialStore.use((store) => store.verify(c))

/** A plain text message from alice to bob, every key present; override what a test needs. */
export const message = (overrides: Partial<CanonicalMessage> = {}): CanonicalMessage => ({
  id: "gw-1",
  received_at: "2026-01-01T00:00:00.000Z",
  principal: { username: "alice@example.test" },
  envelope: { mail_from: "alice@example.test", rcpt_to: ["bob@example.net"] },
  message_id: "<m1@example.test>",
  date: "2026-01-01T00:00:00.000Z",
  from: { address: "alice@example.test", name: "Alice Example" },
  reply_to: [],
  to: [{ address: "bob@example.net", name: null }],
  cc: [],
  subject: "Hello",
  text: "Hi Bob, café ☕",
  html: null,
  headers: [
    { name: "From", value: "Alice Example <alice@example.test>" },
    { name: "To", value: "bob@example.net" },
    { name: "Subject", value: "Hello" },
    { name: "Date", value: "Thu, 01 Jan 2026 00:00:00 +0000" },
    { name: "Message-ID", value: "<m1@example.test>" },
    { name: "MIME-Version", value: "1.0" },
    { name: "Content-Type", value: "text/plain; charset=utf-8" }
  ],
  attachments: [],
  in_reply_to: null,
  references: [],
  ...overrides
})

/** Submits `msg` for one recipient as `principal` through the Cakemail upstream. */
export const submit = (principal: Principal, msg: CanonicalMessage = message(), recipient = "bob@example.net") =>
  Upstream.use((upstream) =>
    upstream.submit({
      id: msg.id,
      message: msg,
      raw: [],
      principal,
      recipients: [recipient as Mailbox],
      idempotencyKey: `${msg.id}:${recipient}`
    }))

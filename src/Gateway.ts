/**
 * The whole gateway as one Layer: the SMTP listener and the admin HTTP server, with every service
 * they need chosen from GatewayConfig (auth backend, upstream) and provided here. Building it starts
 * the gateway; closing its scope drains and stops it (design.md §6).
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Console, Effect, Layer, Option } from "effect"
import { AdminHttp } from "./admin/AdminHttp.ts"
import { Readiness } from "./admin/Readiness.ts"
import { SessionControl } from "./admin/SessionControl.ts"
import { Recorder } from "./capture/Recorder.ts"
import { Authenticator } from "./auth/Authenticator.ts"
import { CakemailSenders, layerCakemailCredentialStore } from "./auth/CakemailAuth.ts"
import { CredentialStore } from "./auth/CredentialStore.ts"
import { layerHttpCredentialStore } from "./auth/HttpAuth.ts"
import { CakemailApi } from "./cakemail/CakemailApi.ts"
import { ensureUsersFile } from "./auth/UsersFile.ts"
import { GatewayConfig } from "./Config.ts"
import { Delivery } from "./delivery/Delivery.ts"
import { layerCakemailUpstream } from "./delivery/CakemailUpstream.ts"
import * as HttpUpstream from "./delivery/HttpUpstream.ts"
import * as OutboxUpstream from "./delivery/OutboxUpstream.ts"
import { Parser } from "./message/Parser.ts"
import { Validator } from "./message/Validator.ts"
import * as Logging from "./observability/Logging.ts"
import { TelemetryLive } from "./observability/Telemetry.ts"
import { EnvelopePolicy } from "./policy/EnvelopePolicy.ts"
import { Limits } from "./policy/Limits.ts"
import { Senders } from "./policy/Senders.ts"
import { SmtpListener } from "./smtp/Listener.ts"
import { MessageMemory } from "./smtp/MessageMemory.ts"
import { Certificates } from "./smtp/Tls.ts"
import { Submission } from "./Submission.ts"

/** One keep-alive pool for every upstream HTTP call (auth API, email API). */
const HttpClientLive = NodeHttpClient.layerNodeHttpOptions({ keepAlive: true, maxSockets: 100 })

/** First start with the file backend: create the users file with one user and say so, once, on stdout. */
const UsersFileBootstrap = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    if (config.auth.backend !== "file") return
    const created = yield* ensureUsersFile(config.auth.usersFile)
    if (Option.isSome(created)) {
      const { password, path, username } = created.value
      yield* Console.log(`Created user "${username}" with password "${password}" in ${path}`)
    }
  })
)

/** One Cakemail client (token, senders and email calls share its pool), built once when used. */
const CakemailApiLive = CakemailApi.layer.pipe(Layer.provide(HttpClientLive))
const CakemailSendersLive = CakemailSenders.layer.pipe(Layer.provide(CakemailApiLive))

const CredentialStoreLive = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    switch (config.auth.backend) {
      case "file":
        return CredentialStore.layerFile
      case "http":
        return layerHttpCredentialStore.pipe(Layer.provide(HttpClientLive))
      case "cakemail":
        return layerCakemailCredentialStore.pipe(Layer.provide(CakemailApiLive))
    }
  })
)

/** Who may send as what: the principal's own rules, or Cakemail's confirmed senders. */
const SendersLive = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    return config.auth.backend === "cakemail"
      ? CakemailSenders.layerPolicy.pipe(Layer.provide(CakemailSendersLive))
      : Senders.layerPrincipal
  })
)

const UpstreamLive = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* GatewayConfig
    switch (config.upstream.kind) {
      case "outbox":
        return OutboxUpstream.layer
      case "http":
        return HttpUpstream.layer.pipe(Layer.provide(HttpClientLive))
      case "cakemail":
        return layerCakemailUpstream.pipe(Layer.provide([CakemailApiLive, CakemailSendersLive]))
    }
  })
)

/** Everything the SMTP hooks need, provided once. */
const AuthenticatorLive = Authenticator.layer.pipe(Layer.provide(CredentialStoreLive))

const ServicesLive = Layer.mergeAll(
  EnvelopePolicy.layerNoDeps,
  Submission.layer.pipe(
    Layer.provide([Parser.layerConfig, Validator.layerNoDeps, Delivery.layer.pipe(Layer.provide(UpstreamLive))])
  ),
  Certificates.layer,
  Recorder.layer,
  MessageMemory.layer
).pipe(Layer.provideMerge(AuthenticatorLive), Layer.provide(SendersLive), Layer.provideMerge(Limits.layer))

/**
 * The gateway, given a GatewayConfig. The SMTP listener is built last, so it is released (drained)
 * first, while the admin HTTP server still answers; the admin API reaches it through SessionControl.
 */
export const GatewayNoConfig = SessionControl.attachListener.pipe(
  Layer.provideMerge(SmtpListener.layer),
  Layer.provideMerge(AdminHttp.layer),
  Layer.provideMerge(ServicesLive),
  Layer.provideMerge(Layer.merge(Readiness.layer, SessionControl.layer)),
  Layer.provide(UsersFileBootstrap),
  Layer.provide(TelemetryLive),
  Layer.provide(Logging.layer)
)

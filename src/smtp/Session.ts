/**
 * One SMTP connection as an Effect: a scoped fiber per connection (in a FiberMap keyed by session id)
 * with span `smtp.session` and logs annotated with `session_id`; the per-connection `Session` service
 * its hooks run with (SessionInfo data, transaction state in a Ref); and what each hook does (AUTH,
 * MAIL, RCPT, DATA, TLS up). Sockets and SMTP syntax stay in smtp-server (Listener.ts).
 */
import type { Readable } from "node:stream"
import * as tls from "node:tls"
import {
  Clock,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberMap,
  FiberSet,
  Metric,
  Option,
  Redacted,
  Ref,
  Schema,
  type Scope
} from "effect"
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerSession } from "smtp-server"
import { Authenticator } from "../auth/Authenticator.ts"
import { AuthError, InvalidCredentials } from "../auth/CredentialStore.ts"
import { GatewayConfig } from "../Config.ts"
import { decodeMailbox, type Mailbox } from "../domain/Address.ts"
import { type BodyType, Envelope, SessionInfo, type TlsInfo } from "../domain/Envelope.ts"
import { BadAddress } from "../domain/Errors.ts"
import { type AuthMethod, Credentials, type Principal } from "../domain/Principal.ts"
import { isRespondable, Replies, type Reply } from "../domain/Reply.ts"
import {
  activeConnections,
  authFailures,
  connectionDuration,
  connectionsTotal,
  emailsReceived,
  bareLineEndings
} from "../observability/Metrics.ts"
import { normalizeAddress } from "../policy/Cidr.ts"
import { EnvelopePolicy } from "../policy/EnvelopePolicy.ts"
import { AuthLockedOut, Limits } from "../policy/Limits.ts"
import { Submission } from "../Submission.ts"
import { readBody } from "./Body.ts"
import * as Hook from "./Hook.ts"

// ---- the Session service ---------------------------------------------------------------------

export interface SessionState {
  /** The EHLO/HELO name, empty before the client gave one. */
  readonly helo: string
  readonly tls: Option.Option<TlsInfo>
  readonly principal: Option.Option<Principal>
  /** What the client logged in with: kept (redacted) for the session so delivery can log in again once
   * when the email API refuses an expired token. */
  readonly credentials: Option.Option<Credentials>
  /** The transaction begun by the last MAIL; `None` between transactions. */
  readonly envelope: Option.Option<Envelope>
  /** Messages accepted on this connection. */
  readonly messages: number
  /** Message bytes received on this connection. */
  readonly bytes: number
  readonly inData: boolean
  /** The body is in and Submission runs (parse, deliver): the session lifetime waits for it. */
  readonly delivering: boolean
  /** Transactions begun (MAIL commands) on this connection. */
  readonly transactions: number
  /** Failed AUTH attempts on this connection. */
  readonly authFailures: number
}

export interface SessionShape {
  readonly id: string
  readonly remoteAddress: string
  readonly remotePort: number
  /** Epoch millis (Clock) of the connection. */
  readonly openedAt: number
  readonly state: Ref.Ref<SessionState>
  /** The session as policy and pipeline see it, now. */
  readonly info: Effect.Effect<SessionInfo>
  /** Sets attributes on this connection's `smtp.session` span. */
  readonly annotate: (attributes: Record<string, string | number>) => Effect.Effect<void>
  /** Sends a final reply (a 421) now and closes the connection, whatever the client is doing. */
  readonly shutdown: (reply: Reply) => Effect.Effect<void>
}

export class Session extends Context.Service<Session, SessionShape>()("smtp-gateway/smtp/Session") {}

/** The services hooks use, besides their Session. */
export type HookServices = GatewayConfig | Authenticator | EnvelopePolicy | Limits | Submission

/** MAIL, RCPT or DATA without a successful AUTH (smtp-server normally answers this itself). */
export class NotAuthenticated extends Schema.TaggedError<NotAuthenticated>()("NotAuthenticated", {}) {
  get reply() {
    return Replies.authRequired
  }
}

/** MAX_MESSAGES_PER_SESSION transactions begun: `421 4.7.0`, the client reconnects to go on. */
export class TooManyMessages extends Schema.TaggedError<TooManyMessages>()("TooManyMessages", {
  limit: Schema.Int
}) {
  get reply() {
    return Replies.tooManyMessages
  }
}

/** Fewer than DATA_MIN_RATE bytes per second over a DATA_RATE_WINDOW: `421 4.4.2`, connection closed. */
export class DataTooSlow extends Schema.TaggedError<DataTooSlow>()("DataTooSlow", {
  bytes: Schema.Number
}) {
  get reply() {
    return Replies.dataTooSlow
  }
}

/** AUTH failures allowed on one connection; the last one is answered `421 4.7.0` and closes it. */
export const maxAuthFailuresPerConnection = 3

// ---- hooks: what each smtp-server callback does, inside its session ---------------------------

/**
 * Sets `smtp.reply.code` on the hook's span from how the hook ended: `success` for a value (or the
 * reply it carries), the error's own reply for a refusal, `451` for a defect. Interruption sets none.
 */
const annotateReply = <A>(success: (value: A) => number) =>
<E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.onExit(effect, (exit) => {
    if (Exit.isSuccess(exit)) return Effect.annotateCurrentSpan({ "smtp.reply.code": success(exit.value) })
    if (Exit.hasInterrupts(exit)) return Effect.void
    const error = Exit.findErrorOption(exit)
    const code = Option.isSome(error) && isRespondable(error.value) ? error.value.reply.code : Replies.internalError.code
    return Effect.annotateCurrentSpan({ "smtp.reply.code": code })
  })

const recordAuthFailure = (reason: "invalid_credentials" | "backend_unavailable" | "malformed") =>
  Metric.update(Metric.withAttributes(authFailures, { reason }), 1)

const refuseAuth = (reason: "invalid_credentials" | "backend_unavailable" | "malformed", error: AuthError) =>
  Effect.gen(function*() {
    yield* recordAuthFailure(reason)
    yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": reason })
    yield* Effect.logInfo("authentication failed").pipe(Effect.annotateLogs({ reason, reply: error.reply.toString() }))
    return yield* error
  })

/**
 * A failed AUTH (bad or malformed credentials): counted for the connection and, in Limits, for the
 * IP+username and the IP; answered after a delay that grows with that pair's failures (the same for
 * an unknown user and a wrong password); `421 4.7.0` and close, instead of `535`, once the connection
 * used its last try or the failure blocked the pair or the IP.
 */
const failAuth = (reason: "invalid_credentials" | "malformed", username: string, error: AuthError) =>
  Effect.gen(function*() {
    const session = yield* Session
    const limits = yield* Limits
    const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, authFailures: s.authFailures + 1 }))
    const outcome = yield* limits.recordAuthFailure(session.remoteAddress, username)
    yield* Effect.sleep(outcome.delay)
    if (!outcome.blocked && state.authFailures < maxAuthFailuresPerConnection) return yield* refuseAuth(reason, error)
    yield* recordAuthFailure(reason)
    yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": "locked_out" })
    yield* Effect.logInfo("authentication failed; closing the connection").pipe(
      Effect.annotateLogs({ reason, failures: state.authFailures, blocked: outcome.blocked })
    )
    return yield* new AuthLockedOut({ scope: outcome.blocked ? "pair" : "connection" })
  })

/**
 * SASL PLAIN or LOGIN into Credentials. `None` for an empty user or password, a PLAIN authorization
 * identity other than the authentication identity, or another mechanism.
 */
export const decodeCredentials = (auth: SMTPServerAuthentication): Option.Option<Credentials> => {
  const method: AuthMethod | undefined = auth.method === "PLAIN" || auth.method === "LOGIN" ? auth.method : undefined
  const password = auth.password ?? ""
  if (method === undefined || password === "") return Option.none()
  const username = method === "PLAIN" ? auth.authcid ?? "" : auth.username ?? ""
  const authzid = method === "PLAIN" ? auth.authzid ?? "" : ""
  if (username === "" || (authzid !== "" && authzid !== username)) return Option.none()
  return Option.some(
    new Credentials({
      username,
      password: Redacted.make(password),
      authzid: authzid === "" ? Option.none() : Option.some(authzid),
      method
    })
  )
}

/**
 * AUTH: refused at once (`421 4.7.0`) while the IP or IP+username is blocked; credentials checked
 * here for shape, then by the Authenticator; failures go through `failAuth`.
 */
export const authenticate = Effect.fnUntraced(function*(auth: SMTPServerAuthentication) {
  const session = yield* Session
  const authenticator = yield* Authenticator
  const limits = yield* Limits
  yield* session.annotate({ "smtp.auth.mechanism": auth.method })
  yield* Effect.annotateCurrentSpan({ "smtp.auth.mechanism": auth.method })
  const username = auth.username ?? ""
  yield* limits.checkAuth(session.remoteAddress, username)
  const credentials = decodeCredentials(auth)
  if (Option.isNone(credentials)) {
    return yield* failAuth("malformed", username, new AuthError({ reason: new InvalidCredentials({}) }))
  }
  const principal = yield* authenticator.verify(credentials.value).pipe(
    Effect.catchTag("AuthError", (error) =>
      error.reason._tag === "InvalidCredentials"
        ? failAuth("invalid_credentials", credentials.value.username, error)
        : refuseAuth("backend_unavailable", error))
  )
  yield* Ref.update(session.state, (state) => ({
    ...state,
    principal: Option.some(principal),
    credentials: credentials
  }))
  yield* session.annotate({ "smtp.auth.user": principal.username })
  yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": "success", "smtp.auth.user": principal.username })
  yield* Effect.logDebug("authenticated").pipe(Effect.annotateLogs({ user: principal.username, mechanism: auth.method }))
  return principal
}, annotateReply(() => Replies.authSucceeded.code), Effect.withSpan("smtp.auth"))

const principalOf = (state: SessionState) =>
  Option.match(state.principal, {
    onNone: () => Effect.fail(new NotAuthenticated()),
    onSome: Effect.succeed
  })

const mailboxOf = (address: string): Effect.Effect<Mailbox, BadAddress> =>
  Option.match(decodeMailbox(address), {
    onNone: () => Effect.fail(new BadAddress({ address })),
    onSome: Effect.succeed
  })

/** MAIL parameters smtp-server has checked for syntax: SIZE=, BODY=, SMTPUTF8. */
export const decodeMailParams = (args: SMTPServerAddress["args"]) => {
  const size = args === false ? undefined : args.SIZE
  const body = args === false ? undefined : args.BODY
  return {
    declaredSize: typeof size === "string" && /^\d+$/.test(size) ? Option.some(Number(size)) : Option.none<number>(),
    bodyType: (typeof body === "string" && body.toUpperCase() === "8BITMIME" ? "8BITMIME" : "7BIT") as BodyType,
    smtputf8: args !== false && args.SMTPUTF8 === true
  }
}

const logRefusal = (command: string) => (error: { readonly reply: Reply }) =>
  Effect.logInfo(`${command} refused`).pipe(Effect.annotateLogs({ reply: error.reply.toString() }))

/** MAIL FROM: starts a new transaction (smtp-server has no RSET hook, so each MAIL starts afresh). */
export const mailFrom = Effect.fnUntraced(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const { limits } = yield* GatewayConfig
    const state = yield* Ref.updateAndGet(session.state, (s) => ({
      ...s,
      envelope: Option.none(),
      transactions: s.transactions + 1
    }))
    const principal = yield* principalOf(state)
    if (state.transactions > limits.maxMessagesPerSession) {
      return yield* new TooManyMessages({ limit: limits.maxMessagesPerSession })
    }
    const sender = yield* mailboxOf(address.address)
    const params = decodeMailParams(address.args)
    yield* policy.checkSender(principal, sender, params.declaredSize)
    yield* policy.checkRate(session.remoteAddress, principal)
    const envelope = new Envelope({ mailFrom: sender, rcptTo: [], ...params })
    yield* Ref.update(session.state, (s) => ({ ...s, envelope: Option.some(envelope) }))
  },
  Effect.tapError(logRefusal("MAIL")),
  annotateReply(() => Replies.senderOk.code),
  Effect.withSpan("smtp.mail")
)

/** RCPT TO: adds a recipient to the transaction; a repeated one is accepted once. */
export const rcptTo = Effect.fnUntraced(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const state = yield* Ref.get(session.state)
    const principal = yield* principalOf(state)
    yield* policy.checkRecipientAddress(address.address)
    const recipient = yield* mailboxOf(address.address)
    if (Option.isNone(state.envelope)) return yield* Effect.die("RCPT without a transaction")
    const envelope = state.envelope.value
    if (envelope.rcptTo.some((r) => r.toLowerCase() === recipient.toLowerCase())) return
    yield* policy.checkRecipient(principal, envelope, recipient)
    yield* Ref.update(session.state, (s) => ({
      ...s,
      envelope: Option.map(s.envelope, (e) => new Envelope({ ...e, rcptTo: [...e.rcptTo, recipient] }))
    }))
  },
  Effect.tapError(logRefusal("RCPT")),
  annotateReply(() => Replies.recipientOk.code),
  Effect.withSpan("smtp.rcpt")
)

/**
 * Fails with DataTooSlow when fewer than DATA_MIN_RATE bytes per second arrived over a window;
 * `byteLength` is smtp-server's running count of the bytes received for this message. Never ends
 * otherwise (it runs beside the body read, which wins when the final dot comes).
 */
const dataRateWatchdog = (stream: { readonly byteLength?: number }) =>
  Effect.gen(function*() {
    const { limits } = yield* GatewayConfig
    if (limits.dataMinRate <= 0) return yield* Effect.never
    const needed = limits.dataMinRate * Duration.toSeconds(limits.dataRateWindow)
    let last = 0
    while (true) {
      yield* Effect.sleep(limits.dataRateWindow)
      const now = stream.byteLength ?? 0
      if (now - last < needed) return yield* new DataTooSlow({ bytes: now - last })
      last = now
    }
  })

/** DATA: reads the body (size-capped, rate-checked), submits it and answers with Submission's reply. */
export const data = Effect.fnUntraced(function*(
  stream: Readable & { readonly sizeExceeded?: boolean; readonly byteLength?: number }
) {
  const session = yield* Session
  const config = yield* GatewayConfig
  const submission = yield* Submission
  const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, inData: true }))
  const principal = yield* principalOf(state)
  if (Option.isNone(state.envelope)) return yield* Effect.die("DATA without a transaction")
  const envelope = state.envelope.value
  yield* Effect.annotateCurrentSpan({ "smtp.recipient_count": envelope.rcptTo.length })

  let size = 0
  return yield* Effect.gen(function*() {
    const message = yield* Effect.raceFirst(readBody(stream, config.limits.maxMessageSize), dataRateWatchdog(stream)).pipe(
      Effect.tapError((error) => error._tag === "DataTooSlow" ? session.shutdown(error.reply) : Effect.void)
    )
    yield* Ref.update(session.state, (s) => ({ ...s, delivering: true }))
    if (message.bareLineEndings > 0) {
      yield* Metric.update(bareLineEndings, message.bareLineEndings)
      yield* Effect.logInfo("bare CR or LF in the message, rewritten to CRLF").pipe(
        Effect.annotateLogs({ bare_line_endings: message.bareLineEndings })
      )
    }
    size = message.size
    yield* Effect.annotateCurrentSpan({ "smtp.message_size": message.size })
    yield* Ref.update(session.state, (s) => ({ ...s, bytes: s.bytes + message.size }))
    yield* Metric.update(emailsReceived, 1)
    const reply = yield* submission.submit({
      session: yield* session.info,
      principal,
      credentials: state.credentials,
      envelope,
      message
    })
    yield* Ref.update(session.state, (s) => ({ ...s, messages: s.messages + 1 }))
    return reply
  }).pipe(
    Effect.onExit((exit) => {
      const reply = Exit.isSuccess(exit)
        ? Option.some(exit.value)
        : Option.map(Exit.findErrorOption(exit), (error) => error.reply)
      return Effect.andThen(
        Ref.update(session.state, (s) => ({ ...s, inData: false, delivering: false, envelope: Option.none() })),
        Option.match(reply, {
          onNone: () => Effect.void,
          onSome: (r) =>
            Effect.logInfo("transaction ended").pipe(
              Effect.annotateLogs({ reply: r.toString(), size, recipients: envelope.rcptTo.length })
            )
        })
      )
    })
  )
}, annotateReply((reply: Reply) => reply.code), Effect.withSpan("smtp.data"))

/** The TLS handshake finished (STARTTLS or implicit TLS): no renegotiation, remember what was agreed. */
export const secured = Effect.fnUntraced(function*(socket: unknown) {
  if (!(socket instanceof tls.TLSSocket)) return
  socket.disableRenegotiation()
  const session = yield* Session
  const info: TlsInfo = { protocol: socket.getProtocol() ?? "unknown", cipher: socket.getCipher()?.name ?? "unknown" }
  yield* Ref.update(session.state, (s) => ({ ...s, tls: Option.some(info) }))
  yield* session.annotate({ "tls.protocol": info.protocol, "tls.cipher": info.cipher })
})

// ---- the sessions of a listener ---------------------------------------------------------------

/** How the session reaches its connection: a final reply (421), then the connection is closed. */
export interface Transport {
  readonly shutdown: (reply: Reply) => void
  /** The verb of the last command the client sent (`DATA` while a body arrives), `null` before any. */
  readonly command: () => string | null
}

export interface SessionSnapshot {
  readonly id: string
  readonly peer: string
  /** The TLS protocol, `null` in cleartext. */
  readonly tls: string | null
  readonly user: string | null
  readonly state: "connected" | "authenticated" | "transaction" | "data"
  readonly bytes: number
  /** Seconds since the connection opened. */
  readonly age: number
  /** The verb of the last command the client sent, `null` before any (never an argument). */
  readonly command: string | null
}

/** What a drain did (POST /drain answers it). */
export interface DrainReport {
  /** Sessions open when the drain began. */
  readonly sessions: number
  /** Idle sessions told `421 4.3.2` at once. */
  readonly idle: number
  /** Busy sessions (in DATA or awaiting the API) that finished within the timeout. */
  readonly finished: number
  /** Busy sessions still running at the timeout, ended then. */
  readonly forced: number
}

export interface Sessions {
  /** onConnect: opens the session and calls back once its hooks can run (421 while draining). */
  readonly connect: (s: SMTPServerSession, transport: Transport, callback: (err?: Error | null) => void) => void
  /** onClose: ends the session fiber (its scope interrupts any hook still running). */
  readonly disconnected: (id: string) => void
  /** Runs a hook inside its session and hands `respond` exactly one outcome. */
  readonly hook: <A, E>(
    s: SMTPServerSession,
    effect: Effect.Effect<A, E, Session | HookServices>,
    respond: (outcome: Hook.Outcome<A>) => void
  ) => void
  readonly snapshot: Effect.Effect<ReadonlyArray<SessionSnapshot>>
  readonly size: Effect.Effect<number>
  /** Ends one session with `421 4.3.2`; false when there is no such session. */
  readonly disconnect: (id: string) => Effect.Effect<boolean>
  /**
   * Shutdown: idle sessions get `421 4.3.2` now, busy ones (a hook running: DATA, delivery) when they
   * finish or when `timeout` has passed, whichever comes first; then every session fiber is ended.
   */
  readonly drain: (timeout: Duration.Duration) => Effect.Effect<DrainReport>
}

interface Handle {
  readonly session: SessionShape
  readonly fork: Hook.Fork<Session | HookServices>
  readonly transport: Transport
  inFlight: number
  /** Sent (then the connection closes) once the hook in flight has answered: the session lifetime. */
  closeWith: Reply | undefined
}

const initialState: SessionState = {
  helo: "",
  tls: Option.none(),
  principal: Option.none(),
  credentials: Option.none(),
  envelope: Option.none(),
  messages: 0,
  bytes: 0,
  inData: false,
  delivering: false,
  transactions: 0,
  authFailures: 0
}

const phaseOf = (state: SessionState): SessionSnapshot["state"] =>
  state.inData
    ? "data"
    : Option.isSome(state.envelope)
    ? "transaction"
    : Option.isSome(state.principal)
    ? "authenticated"
    : "connected"

/**
 * Where the `smtp.session` span is opened, for a defect's stack trace: read once here, where Effect
 * would capture a stack trace for every connection.
 */
const sessionSpanLocation: () => string | undefined = (() => {
  const location = new Error().stack?.split("\n")[1]?.trim()
  return () => location
})()

/** The registry of a listener's sessions; closing the scope interrupts the sessions left. */
export const makeSessions: Effect.Effect<Sessions, never, Scope.Scope | HookServices> = Effect.gen(function*() {
  const context = yield* Effect.context<HookServices>()
  const runFork = Effect.runForkWith(context)
  const fibers = yield* FiberMap.make<string, void, never>()
  const handles = new Map<string, Handle>()
  const closers = new Map<string, Deferred.Deferred<void>>()
  let draining = false
  const { limits: configLimits } = yield* GatewayConfig
  const limits = yield* Limits
  // connections per process and per client IP, counted synchronously at connect (both listeners)
  const ipOf = new Map<string, string>()
  const perIp = new Map<string, number>()
  const release = (id: string) => {
    const ip = ipOf.get(id)
    if (ip === undefined) return
    ipOf.delete(id)
    const n = (perIp.get(ip) ?? 1) - 1
    if (n <= 0) perIp.delete(ip)
    else perIp.set(ip, n)
  }

  /**
   * SESSION_MAX_LIFETIME reached: `421 4.4.2` now, or, while a delivery runs (the body is in), as soon
   * as its reply is sent; a client still sending its body is cut off (it has had the whole lifetime).
   */
  const expire = (id: string) =>
    Effect.gen(function*() {
      const handle = handles.get(id)
      if (handle === undefined) return
      const state = yield* Ref.get(handle.session.state)
      yield* Effect.logInfo("session lifetime reached").pipe(Effect.annotateLogs({ delivering: state.delivering }))
      if (state.delivering && handle.inFlight > 0) handle.closeWith = Replies.sessionExpired
      else handle.transport.shutdown(Replies.sessionExpired)
    })

  const sessionFiber = (s: SMTPServerSession, transport: Transport, closed: Deferred.Deferred<void>, ready: Deferred.Deferred<boolean>) =>
    Effect.gen(function*() {
      const openedAt = yield* Clock.currentTimeMillis
      const span = yield* Effect.option(Effect.currentSpan)
      const state = yield* Ref.make(initialState)
      const session: SessionShape = {
        id: s.id,
        remoteAddress: s.remoteAddress,
        remotePort: s.remotePort,
        openedAt,
        state,
        info: Effect.map(Ref.get(state), (st) =>
          new SessionInfo({ id: s.id, remoteAddress: s.remoteAddress, remotePort: s.remotePort, helo: st.helo, tls: st.tls })),
        annotate: (attributes) =>
          Effect.sync(() => {
            if (Option.isNone(span)) return
            for (const [key, value] of Object.entries(attributes)) span.value.attribute(key, value)
          }),
        shutdown: (reply) => Effect.sync(() => transport.shutdown(reply))
      }
      const inFlight = yield* FiberSet.make<unknown, unknown>()
      const fork = yield* FiberSet.runtime(inFlight)<Session | HookServices>().pipe(Effect.provideService(Session, session))

      yield* Metric.update(Metric.withAttributes(connectionsTotal, { result: "accepted" }), 1)
      yield* Metric.modify(activeConnections, 1)
      yield* Effect.logInfo("connection opened").pipe(Effect.annotateLogs({ peer: `${s.remoteAddress}:${s.remotePort}` }))
      yield* Effect.addFinalizer((exit) =>
        Effect.gen(function*() {
          handles.delete(s.id)
          closers.delete(s.id)
          if (Exit.hasInterrupts(exit)) transport.shutdown(Replies.shuttingDown)
          const closedAt = yield* Clock.currentTimeMillis
          const last = yield* Ref.get(state)
          yield* Metric.modify(activeConnections, -1)
          yield* Metric.update(connectionDuration, (closedAt - openedAt) / 1000)
          yield* Effect.logInfo("connection closed").pipe(
            Effect.annotateLogs({ duration_ms: closedAt - openedAt, messages: last.messages })
          )
        })
      )
      handles.set(s.id, { session, fork, transport, inFlight: 0, closeWith: undefined })
      yield* Effect.forkScoped(Effect.andThen(Effect.sleep(configLimits.sessionMaxLifetime), expire(s.id)))
      yield* Deferred.succeed(ready, true)
      yield* Deferred.await(closed)
    }).pipe(
      Effect.ensuring(Deferred.succeed(ready, false)),
      Effect.scoped,
      Effect.annotateLogs({ session_id: s.id }),
      Effect.withSpan("smtp.session", {
        root: true,
        attributes: { "client.address": s.remoteAddress, "client.port": s.remotePort, "smtp.session_id": s.id }
      }, { captureStackTrace: sessionSpanLocation })
    )

  const refuse = (callback: (err?: Error | null) => void, reply: Reply = Replies.shuttingDown) => {
    runFork(Metric.update(Metric.withAttributes(connectionsTotal, { result: "rejected" }), 1))
    callback(Hook.toServerError(reply))
  }

  /** MAX_CONNECTIONS (this process) and MAX_CONNECTIONS_PER_IP (ALLOWLIST_CIDRS exempt); counts the connection when it fits. */
  const admit = (s: SMTPServerSession): boolean => {
    const ip = normalizeAddress(s.remoteAddress)
    if (ipOf.size >= configLimits.maxConnections) return false
    if (!limits.isAllowlisted(ip) && (perIp.get(ip) ?? 0) >= configLimits.maxConnectionsPerIp) return false
    ipOf.set(s.id, ip)
    perIp.set(ip, (perIp.get(ip) ?? 0) + 1)
    return true
  }

  const connect: Sessions["connect"] = (s, transport, callback) => {
    const closed = Deferred.makeUnsafe<void>()
    closers.set(s.id, closed) // before anything async: an early onClose still ends the session
    if (draining) return refuse(callback)
    if (!admit(s)) {
      runFork(Effect.logInfo("connection refused: too many connections").pipe(
        Effect.annotateLogs({ session_id: s.id, peer: `${s.remoteAddress}:${s.remotePort}` })
      ))
      return refuse(callback, Replies.tooManyConnections)
    }
    const opened = Effect.gen(function*() {
      const ready = yield* Deferred.make<boolean>()
      const fiber = yield* FiberMap.run(fibers, s.id, sessionFiber(s, transport, closed, ready))
      return yield* Effect.raceFirst(Deferred.await(ready), Effect.as(Fiber.await(fiber), false))
    })
    runFork(opened).addObserver((exit) => {
      if (Exit.isSuccess(exit) && exit.value && !draining) return callback(null)
      if (draining) return refuse(callback)
      callback(Hook.toServerError(Replies.internalError))
    })
  }

  const disconnected: Sessions["disconnected"] = (id) => {
    release(id)
    const closed = closers.get(id)
    if (closed !== undefined) Deferred.doneUnsafe(closed, Exit.void)
  }

  const observe = (s: SMTPServerSession) => (state: SessionState): SessionState => {
    const helo = typeof s.hostNameAppearsAs === "string" ? s.hostNameAppearsAs : ""
    return helo === state.helo ? state : { ...state, helo }
  }

  const hook: Sessions["hook"] = (s, effect, respond) => {
    const handle = handles.get(s.id)
    if (handle === undefined) return Hook.run(undefined, effect, respond)
    handle.inFlight++
    const observed = Effect.gen(function*() {
      const before = yield* Ref.get(handle.session.state)
      const after = yield* Ref.updateAndGet(handle.session.state, observe(s))
      if (after.helo !== before.helo) yield* handle.session.annotate({ "smtp.helo": after.helo })
      return yield* effect
    })
    Hook.run(handle.fork, observed, (outcome) => {
      handle.inFlight--
      respond(outcome)
      if (draining && handle.inFlight === 0) handle.transport.shutdown(Replies.shuttingDown)
      else if (handle.closeWith !== undefined && handle.inFlight === 0) handle.transport.shutdown(handle.closeWith)
    })
  }

  const snapshot = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const out: Array<SessionSnapshot> = []
    for (const handle of handles.values()) {
      const { session } = handle
      const state = yield* Ref.get(session.state)
      out.push({
        id: session.id,
        peer: `${session.remoteAddress}:${session.remotePort}`,
        tls: Option.getOrNull(Option.map(state.tls, (t) => t.protocol)),
        user: Option.getOrNull(Option.map(state.principal, (p) => p.username)),
        state: phaseOf(state),
        bytes: state.bytes,
        age: Math.max(0, Math.round((now - session.openedAt) / 1000)),
        command: handle.transport.command()
      })
    }
    return out
  })

  const disconnect = (id: string) =>
    Effect.sync(() => {
      const handle = handles.get(id)
      handle?.transport.shutdown(Replies.shuttingDown)
      return handle !== undefined
    })

  const drain = (timeout: Duration.Duration) =>
    Effect.gen(function*() {
      draining = true
      const sessions = handles.size
      let idle = 0
      for (const handle of handles.values()) {
        if (handle.inFlight === 0) {
          idle++
          handle.transport.shutdown(Replies.shuttingDown)
        }
      }
      const drained = yield* FiberMap.awaitEmpty(fibers).pipe(Effect.timeoutOption(timeout))
      const forced = handles.size
      if (Option.isNone(drained)) {
        yield* Effect.logWarning("drain timeout: closing the sessions still busy").pipe(
          Effect.annotateLogs({ sessions: forced })
        )
        for (const handle of handles.values()) handle.transport.shutdown(Replies.shuttingDown)
      }
      yield* FiberMap.clear(fibers)
      return { sessions, idle, finished: Math.max(0, sessions - idle - forced), forced }
    })

  return { connect, disconnected, hook, snapshot, size: FiberMap.size(fibers), disconnect, drain }
})

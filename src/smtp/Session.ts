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
  type Duration,
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
import { Replies, type Reply } from "../domain/Reply.ts"
import {
  activeConnections,
  authFailures,
  connectionDuration,
  connectionsTotal,
  emailsReceived
} from "../observability/Metrics.ts"
import { EnvelopePolicy } from "../policy/EnvelopePolicy.ts"
import { Submission } from "../Submission.ts"
import { readBody } from "./Body.ts"
import * as Hook from "./Hook.ts"

// ---- the Session service ---------------------------------------------------------------------

export interface SessionState {
  /** The EHLO/HELO name, empty before the client gave one. */
  readonly helo: string
  readonly tls: Option.Option<TlsInfo>
  readonly principal: Option.Option<Principal>
  /** The transaction begun by the last MAIL; `None` between transactions. */
  readonly envelope: Option.Option<Envelope>
  /** Messages accepted on this connection. */
  readonly messages: number
  /** Message bytes received on this connection. */
  readonly bytes: number
  readonly inData: boolean
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
}

export class Session extends Context.Service<Session, SessionShape>()("smtp-gateway/smtp/Session") {}

/** The services hooks use, besides their Session. */
export type HookServices = GatewayConfig | Authenticator | EnvelopePolicy | Submission

/** MAIL, RCPT or DATA without a successful AUTH (smtp-server normally answers this itself). */
export class NotAuthenticated extends Schema.TaggedError<NotAuthenticated>()("NotAuthenticated", {}) {
  get reply() {
    return Replies.authRequired
  }
}

// ---- hooks: what each smtp-server callback does, inside its session ---------------------------

const recordAuthFailure = (reason: "invalid_credentials" | "backend_unavailable" | "malformed") =>
  Metric.update(Metric.withAttributes(authFailures, { reason }), 1)

const refuseAuth = (reason: "invalid_credentials" | "backend_unavailable" | "malformed", error: AuthError) =>
  Effect.gen(function*() {
    yield* recordAuthFailure(reason)
    yield* Effect.logInfo("authentication failed").pipe(Effect.annotateLogs({ reason, reply: error.reply.toString() }))
    return yield* error
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

/** AUTH: credentials checked here for shape, then by the Authenticator. */
export const authenticate = Effect.fn("smtp.auth")(function*(auth: SMTPServerAuthentication) {
  const session = yield* Session
  const authenticator = yield* Authenticator
  yield* session.annotate({ "smtp.auth.mechanism": auth.method })
  const credentials = decodeCredentials(auth)
  if (Option.isNone(credentials)) {
    return yield* refuseAuth("malformed", new AuthError({ reason: new InvalidCredentials({}) }))
  }
  const principal = yield* authenticator.verify(credentials.value).pipe(
    Effect.catchTag("AuthError", (error) =>
      refuseAuth(error.reason._tag === "InvalidCredentials" ? "invalid_credentials" : "backend_unavailable", error))
  )
  yield* Ref.update(session.state, (state) => ({ ...state, principal: Option.some(principal) }))
  yield* session.annotate({ "smtp.auth.user": principal.username })
  yield* Effect.logDebug("authenticated").pipe(Effect.annotateLogs({ user: principal.username, mechanism: auth.method }))
  return principal
})

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
export const mailFrom = Effect.fn("smtp.mail")(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, envelope: Option.none() }))
    const principal = yield* principalOf(state)
    const sender = yield* mailboxOf(address.address)
    const params = decodeMailParams(address.args)
    yield* policy.checkSender(principal, sender, params.declaredSize)
    const envelope = new Envelope({ mailFrom: sender, rcptTo: [], ...params })
    yield* Ref.update(session.state, (s) => ({ ...s, envelope: Option.some(envelope) }))
  },
  Effect.tapError(logRefusal("MAIL"))
)

/** RCPT TO: adds a recipient to the transaction; a repeated one is accepted once. */
export const rcptTo = Effect.fn("smtp.rcpt")(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const state = yield* Ref.get(session.state)
    const principal = yield* principalOf(state)
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
  Effect.tapError(logRefusal("RCPT"))
)

/** DATA: reads the body (size-capped), submits it and answers with Submission's reply. */
export const data = Effect.fn("smtp.data")(function*(stream: Readable & { readonly sizeExceeded?: boolean }) {
  const session = yield* Session
  const config = yield* GatewayConfig
  const submission = yield* Submission
  const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, inData: true }))
  const principal = yield* principalOf(state)
  if (Option.isNone(state.envelope)) return yield* Effect.die("DATA without a transaction")
  const envelope = state.envelope.value

  let size = 0
  return yield* Effect.gen(function*() {
    const message = yield* readBody(stream, config.limits.maxMessageSize)
    size = message.size
    yield* Ref.update(session.state, (s) => ({ ...s, bytes: s.bytes + message.size }))
    yield* Metric.update(emailsReceived, 1)
    const reply = yield* submission.submit({ session: yield* session.info, principal, envelope, message })
    yield* Ref.update(session.state, (s) => ({ ...s, messages: s.messages + 1 }))
    return reply
  }).pipe(
    Effect.onExit((exit) => {
      const reply = Exit.isSuccess(exit)
        ? Option.some(exit.value)
        : Option.map(Exit.findErrorOption(exit), (error) => error.reply)
      return Effect.andThen(
        Ref.update(session.state, (s) => ({ ...s, inData: false, envelope: Option.none() })),
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
})

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
  readonly drain: (timeout: Duration.Duration) => Effect.Effect<void>
}

interface Handle {
  readonly session: SessionShape
  readonly fork: Hook.Fork<Session | HookServices>
  readonly transport: Transport
  inFlight: number
}

const initialState: SessionState = {
  helo: "",
  tls: Option.none(),
  principal: Option.none(),
  envelope: Option.none(),
  messages: 0,
  bytes: 0,
  inData: false
}

const phaseOf = (state: SessionState): SessionSnapshot["state"] =>
  state.inData
    ? "data"
    : Option.isSome(state.envelope)
    ? "transaction"
    : Option.isSome(state.principal)
    ? "authenticated"
    : "connected"

/** The registry of a listener's sessions; closing the scope interrupts the sessions left. */
export const makeSessions: Effect.Effect<Sessions, never, Scope.Scope | HookServices> = Effect.gen(function*() {
  const context = yield* Effect.context<HookServices>()
  const runFork = Effect.runForkWith(context)
  const fibers = yield* FiberMap.make<string, void, never>()
  const handles = new Map<string, Handle>()
  const closers = new Map<string, Deferred.Deferred<void>>()
  let draining = false

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
          })
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
      handles.set(s.id, { session, fork, transport, inFlight: 0 })
      yield* Deferred.succeed(ready, true)
      yield* Deferred.await(closed)
    }).pipe(
      Effect.ensuring(Deferred.succeed(ready, false)),
      Effect.scoped,
      Effect.annotateLogs({ session_id: s.id }),
      Effect.withSpan("smtp.session", {
        root: true,
        attributes: { "client.address": s.remoteAddress, "client.port": s.remotePort, "smtp.session_id": s.id }
      })
    )

  const refuse = (callback: (err?: Error | null) => void) => {
    runFork(Metric.update(Metric.withAttributes(connectionsTotal, { result: "rejected" }), 1))
    callback(Hook.toServerError(Replies.shuttingDown))
  }

  const connect: Sessions["connect"] = (s, transport, callback) => {
    const closed = Deferred.makeUnsafe<void>()
    closers.set(s.id, closed) // before anything async: an early onClose still ends the session
    if (draining) return refuse(callback)
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
    })
  }

  const snapshot = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const out: Array<SessionSnapshot> = []
    for (const { session } of handles.values()) {
      const state = yield* Ref.get(session.state)
      out.push({
        id: session.id,
        peer: `${session.remoteAddress}:${session.remotePort}`,
        tls: Option.getOrNull(Option.map(state.tls, (t) => t.protocol)),
        user: Option.getOrNull(Option.map(state.principal, (p) => p.username)),
        state: phaseOf(state),
        bytes: state.bytes,
        age: Math.max(0, Math.round((now - session.openedAt) / 1000))
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
      for (const handle of handles.values()) {
        if (handle.inFlight === 0) handle.transport.shutdown(Replies.shuttingDown)
      }
      const drained = yield* FiberMap.awaitEmpty(fibers).pipe(Effect.timeoutOption(timeout))
      if (Option.isNone(drained)) {
        yield* Effect.logWarning("drain timeout: closing the sessions still busy").pipe(
          Effect.annotateLogs({ sessions: handles.size })
        )
        for (const handle of handles.values()) handle.transport.shutdown(Replies.shuttingDown)
      }
      yield* FiberMap.clear(fibers)
    })

  return { connect, disconnected, hook, snapshot, size: FiberMap.size(fibers), disconnect, drain }
})

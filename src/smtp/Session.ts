/**
 * One SMTP connection as an Effect: a scoped fiber per connection (in a FiberMap keyed by session id)
 * with span `smtp.session` and logs annotated with `session_id`; the per-connection `Session` service
 * its hooks run with (SessionInfo data, transaction state in a Ref). What each hook does is in
 * Commands.ts; sockets and SMTP syntax stay in smtp-server (Listener.ts).
 */
import { Clock, Context, Deferred, Duration, Effect, Exit, Fiber, FiberMap, FiberSet, Metric, Option, Ref, type Scope } from "effect"
import type { SMTPServerSession } from "smtp-server"
import type { Authenticator } from "../auth/Authenticator.ts"
import { GatewayConfig } from "../Config.ts"
import { type Envelope, SessionInfo, type TlsInfo } from "../domain/Envelope.ts"
import type { Credentials, Principal } from "../domain/Principal.ts"
import { Replies, type Reply } from "../domain/Reply.ts"
import { activeConnections, connectionDuration, connectionsTotal } from "../observability/Metrics.ts"
import { clientKey } from "../policy/Cidr.ts"
import type { EnvelopePolicy } from "../policy/EnvelopePolicy.ts"
import { Limits } from "../policy/Limits.ts"
import type { Submission } from "../Submission.ts"
import * as Hook from "./Hook.ts"
import type { MessageMemory } from "./MessageMemory.ts"

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
}

export class Session extends Context.Service<Session, SessionShape>()("smtp-gateway/smtp/Session") {}

/** The services hooks use, besides their Session. */
export type HookServices = GatewayConfig | Authenticator | EnvelopePolicy | Limits | MessageMemory | Submission

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

// the two updates of `smtp_connections_total`, made once (not one withAttributes per connection)
const connectionAccepted = Metric.update(Metric.withAttributes(connectionsTotal, { result: "accepted" }), 1)
const connectionRejected = Metric.update(Metric.withAttributes(connectionsTotal, { result: "rejected" }), 1)

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
  // connections per process and per client (IP, or IPv6 /64), counted synchronously at connect (both listeners)
  const clientOf = new Map<string, string>()
  const perClient = new Map<string, number>()
  const release = (id: string) => {
    const client = clientOf.get(id)
    if (client === undefined) return
    clientOf.delete(id)
    const n = (perClient.get(client) ?? 1) - 1
    if (n <= 0) perClient.delete(client)
    else perClient.set(client, n)
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
          })
      }
      const inFlight = yield* FiberSet.make<unknown, unknown>()
      const fork = yield* FiberSet.runtime(inFlight)<Session | HookServices>().pipe(Effect.provideService(Session, session))

      yield* connectionAccepted
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
    runFork(connectionRejected)
    callback(Hook.toServerError(reply))
  }

  /**
   * MAX_CONNECTIONS (this process) and MAX_CONNECTIONS_PER_IP (ALLOWLIST_CIDRS exempt; an IPv6 client
   * counted by its /64, see `clientKey`); counts the connection when it fits.
   */
  const admit = (s: SMTPServerSession): boolean => {
    const client = clientKey(s.remoteAddress)
    if (clientOf.size >= configLimits.maxConnections) return false
    if (!limits.isAllowlisted(s.remoteAddress) && (perClient.get(client) ?? 0) >= configLimits.maxConnectionsPerIp) return false
    clientOf.set(s.id, client)
    perClient.set(client, (perClient.get(client) ?? 0) + 1)
    return true
  }

  const connect: Sessions["connect"] = (s, transport, callback) => {
    if (draining) return refuse(callback)
    if (!admit(s)) {
      runFork(Effect.logInfo("connection refused: too many connections").pipe(
        Effect.annotateLogs({ session_id: s.id, peer: `${s.remoteAddress}:${s.remotePort}` })
      ))
      return refuse(callback, Replies.tooManyConnections)
    }
    const closed = Deferred.makeUnsafe<void>()
    closers.set(s.id, closed) // before anything async: an early onClose still ends the session
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
    closers.delete(id)
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

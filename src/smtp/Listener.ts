/**
 * SmtpListener: the smtp-server instances (submission with STARTTLS, optional implicit TLS) as a scoped
 * service. Listens on acquire; on release stops accepting, drains sessions and closes them with
 * `421 4.3.2`. Adapter only: sockets, TLS and SMTP syntax are smtp-server's, policy is the services'.
 */
import * as crypto from "node:crypto"
import type * as net from "node:net"
import type * as tls from "node:tls"
import { Context, Deferred, Duration, Effect, Layer, Option, Result, Schema } from "effect"
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from "smtp-server"
import { SMTPConnection, type SMTPConnectionOptions } from "smtp-server/lib/smtp-connection.js"
import type { SMTPStream } from "smtp-server/lib/smtp-stream.js"
import { Readiness } from "../admin/Readiness.ts"
import { type ConnectionTap, Recorder } from "../capture/Recorder.ts"
import { GatewayConfig } from "../Config.ts"
import { Replies, type Reply } from "../domain/Reply.ts"
import { makeCidrMatcher } from "../policy/Cidr.ts"
import * as Hook from "./Hook.ts"
import { readProxyHeader } from "./Proxy.ts"
import * as Commands from "./Commands.ts"
import * as Session from "./Session.ts"
import { Certificates, tlsOptions } from "./Tls.ts"

/** The listener could not start; the message says how to fix it. */
export class ListenError extends Schema.TaggedError<ListenError>()("ListenError", {
  message: Schema.String
}) {}

/**
 * smtp-server holds each new connection 100 ms before the greeting, to catch clients that talk first
 * (a port-25 measure). On a submission port a few milliseconds keep that check (a command before the
 * greeting still gets `421 You talk too soon`) without making every connection wait.
 */
const greetingDelayMillis = 5

/**
 * Replies smtp-server writes itself, rewritten to the gateway's table (design.md §3). Only text
 * without our own enhanced code reaches this (a hook's reply is already exact).
 */
const libraryReply = (code: number, text: string | null | undefined, context: string | false | undefined, size: number): Reply | undefined => {
  if (code === 538) return Replies.tlsRequired
  if (code === 421 && text === "Timeout - closing connection") return Replies.idleTimeout
  if (code === 552 && context === "MESSAGE_TOO_BIG") return Replies.messageTooLarge(size)
  if (code === 250 && context === "MAIL_FROM_OK") return Replies.senderOk
  if (code === 250 && context === "RCPT_TO_OK") return Replies.recipientOk
  if (code === 501 && (context === "SENDER_SYNTAX_ERROR" || context === "MAILBOX_SYNTAX_ERROR")) return Replies.badAddress
  if (code === 501 && text === "Error: missing username") return Replies.authInvalid
  // protocol robustness (issue 4): smtp-server's own refusals, in the gateway's words
  if (code === 421 && text?.endsWith(" You talk too soon")) return Replies.talkedTooSoon
  if (code === 421 && text === "HTTP requests not allowed") return Replies.httpRefused
  if (code === 421 && text === "Error: Command line too long") return Replies.lineTooLong
  if (code === 421 && (text === "Error: too many unrecognized commands" || text === "Error: too many unauthenticated commands")) {
    return Replies.tooManyErrors
  }
  if (code === 503 && text === "Error: TLS already active") return Replies.badSequence("TLS already active")
  if (code === 503 && text === "Error: No identity changes permitted") return Replies.badSequence("Already authenticated")
  if (code === 501 && text === "Authentication aborted") return Replies.authCancelled
  if (code === 501 && text === "Error: invalid userdata") return Replies.authMalformed
  return undefined
}

// ---- protocol hardening: AUTH exchanges, errors, TLS handshakes, PROXY (issue 4) ----------------

/** Commands over RFC 4954's limit for an AUTH line (12288 octets) end the connection (`421 4.5.2`). */
const maxCommandLength = 12_288
/** Refusals (500-504) on one connection before `421 4.7.0` and close. */
const maxErrorsPerConnection = 10

interface GuardSettings {
  readonly handshakeTimeoutMillis: number
  /** Peers allowed to send a PROXY header (TRUSTED_PROXIES). */
  readonly trustedProxy: (address: string) => boolean
}

const defaultGuard: GuardSettings = { handshakeTimeoutMillis: 10_000, trustedProxy: () => false }

/** Strict base64 (RFC 4648, padded); empty is allowed (an empty AUTH LOGIN response). */
const isBase64 = (text: string) => /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)

/**
 * The connection's protocol guards, below GatewayConnection: AUTH lines checked before smtp-server
 * decodes them (it would take broken base64 silently), AUTH out of sequence refused with `503 5.5.1`,
 * refusals counted (too many close the connection), and the STARTTLS handshake bounded in time.
 */
class ProtocolGuard extends SMTPConnection {
  errors = 0

  get guard(): GuardSettings {
    return this._server instanceof GuardedServer ? this._server.guard : defaultGuard
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    if (this._ready && !this._upgrading && !this._closing) {
      const refusal = this.authRefusal((command ?? "").toString("latin1").trim())
      if (refusal !== undefined) {
        this._nextHandler = false
        this.send(refusal.code, Hook.wireText(refusal), false)
        return this._whenWritable(callback ?? (() => undefined))
      }
    }
    return super._onCommand(command, callback)
  }

  /** RFC 4954: `*` cancels (`501 5.7.0`), a response that is not base64 is refused (`501 5.5.2`); AUTH once, outside a transaction. */
  authRefusal(line: string): Reply | undefined {
    if (this._nextHandler !== false) {
      if (line === "*") return Replies.authCancelled
      return isBase64(line) ? undefined : Replies.authMalformed
    }
    const [verb = "", , initial, ...rest] = line.split(/\s+/)
    if (verb.toUpperCase() !== "AUTH" || !this.secure || this.hostNameAppearsAs === false) return undefined
    if (this.session.envelope?.mailFrom) return Replies.badSequence("AUTH not permitted during a mail transaction")
    if (this.session.user) return Replies.badSequence("Already authenticated")
    if (initial !== undefined && initial !== "=" && rest.length === 0 && !isBase64(initial)) return Replies.authMalformed
    return undefined
  }

  override send(code: number, data?: string | Array<string> | null, context?: string | false): void {
    this.coalesceReplies()
    super.send(code, data, context)
    if (code >= 500 && code <= 504 && !this._closing && ++this.errors >= maxErrorsPerConnection) {
      super.send(Replies.tooManyErrors.code, Hook.wireText(Replies.tooManyErrors), false)
    }
  }

  private corked = false

  /**
   * Replies written in one event-loop turn (answers to pipelined commands, such as MAIL and RCPT) leave
   * as one TLS record and one write instead of one each: the TLS socket is corked until the turn ends.
   * Only on a TLS socket, never on the plain one (a STARTTLS upgrade must find nothing held back);
   * `end()` flushes what is held, so a closing reply is never lost.
   */
  private coalesceReplies(): void {
    const socket = this._socket
    if (this.corked || !this.secure || this._upgrading || socket.destroyed) return
    socket.cork()
    this.corked = true
    setImmediate(() => {
      this.corked = false
      if (socket.writableCorked > 0) socket.uncork()
    })
  }

  /** smtp-server arms the STARTTLS socket with the idle timeout; its handshake gets TLS_HANDSHAKE_TIMEOUT. */
  override _armTimeout(socket?: net.Socket): void {
    super._armTimeout(socket)
    if (socket === undefined || socket === this._socket || !this._upgrading) return
    const timer = setTimeout(() => {
      if (this._upgrading && !socket.destroyed) socket.destroy()
    }, this.guard.handshakeTimeoutMillis)
    timer.unref()
    socket.once("secure", () => clearTimeout(timer))
    socket.once("close", () => clearTimeout(timer))
  }
}

/**
 * The server's guards, below GatewayServer: PROXY headers (v1, v2) read only from TRUSTED_PROXIES
 * (CIDRs; smtp-server's `useProxy` takes exact addresses and v1 only), which must send one; and the
 * implicit-TLS handshake bounded by TLS_HANDSHAKE_TIMEOUT.
 */
class GuardedServer extends SMTPServer {
  guard: GuardSettings = defaultGuard

  override _expectsProxyHeader(socket: net.Socket): boolean {
    return this.guard.trustedProxy(socket.remoteAddress ?? "")
  }

  override _handleProxy(socket: net.Socket, callback: Parameters<SMTPServer["_handleProxy"]>[1]): void {
    if (!this._expectsProxyHeader(socket)) return super._handleProxy(socket, callback)
    const id = BigInt("0x" + crypto.randomBytes(10).toString("hex")).toString(32).padStart(16, "0")
    readProxyHeader(socket, (error, client) => {
      if (error !== null) {
        this._onError(Object.assign(error, { code: "PROXY", remoteAddress: socket.remoteAddress }))
        return callback(error)
      }
      callback(null, client === undefined ? { id } : { id, remoteAddress: client.address, remotePort: client.port })
    })
  }

  override _upgrade(socket: net.Socket, callback: Parameters<SMTPServer["_upgrade"]>[1]): void {
    let done = false
    const timer = setTimeout(() => {
      if (!done) (this._pendingSockets.get(socket) ?? socket).destroy()
    }, this.guard.handshakeTimeoutMillis)
    timer.unref()
    super._upgrade(socket, (error, tlsSocket) => {
      done = true
      clearTimeout(timer)
      callback(error, tlsSocket)
    })
  }
}

/** SMTP verbs shown as a session's current command; anything else shows as UNKNOWN. */
const knownVerbs = new Set([
  "HELO", "EHLO", "LHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN",
  "HELP", "XCLIENT", "XFORWARD"
])

/**
 * smtp-server's connection with two documented overrides: a shorter greeting delay (`init`), and
 * `send`, which makes every reply exact: text from `Hook.wireText` goes out as is (smtp-server would
 * otherwise put its own enhanced code in front), library replies are mapped to our table, and AUTH is
 * advertised in EHLO only once TLS is up.
 */
class GatewayConnection extends ProtocolGuard {
  /** The verb of the last command (for GET /sessions); an AUTH continuation counts as AUTH. */
  lastCommand: string | null = null

  override _onCommand(command: Buffer, callback?: () => void): void {
    const verb = (command ?? "").toString().split(" ", 1)[0]!.toUpperCase()
    const safe = this._redactCredentials(verb, "").commandName
    this.lastCommand = knownVerbs.has(safe) ? safe : "UNKNOWN"
    return super._onCommand(command, callback)
  }

  override init(): void {
    // SMTPConnection.init with `greetingDelayMillis` instead of 100 ms, and without its own maxClients
    // check: Sessions.admit counts MAX_CONNECTIONS across both listeners, with the metric and the log line
    this._setListeners(() => {
      this.openEarly()
      setTimeout(() => this.connectionReady(), greetingDelayMillis).unref()
    })
  }

  /** The session's opening, begun with the connection; onConnect (after the early-talker window) awaits it. */
  opening: Opening | undefined = undefined

  /**
   * Opens the session (admission, session fiber, span, log line) during the early-talker window rather
   * than after it, so the greeting waits for the window only, not for the window and then the opening.
   * A client that talks before the greeting is still refused (`421 4.7.0`, smtp-server's check) and its session closed.
   */
  openEarly(): void {
    const open = this._server instanceof GatewayServer ? this._server.openSession : undefined
    if (open === undefined) return
    this._resetSession() // the session as onConnect will see it (id, remote address and port)
    const opening = new Opening()
    this.opening = opening
    open(this.session, (err) => opening.settle(err))
  }

  override send(code: number, data?: string | Array<string> | null, context?: string | false): void {
    if (Array.isArray(data)) {
      return super.send(code, this.secure ? data : data.filter((line) => !/^AUTH\b/i.test(line)), context)
    }
    if (typeof data === "string" && Hook.carriesEnhancedCode(data)) return super.send(code, data, false)
    const reply = libraryReply(code, data, context, Number(this._server.options.size) || 0)
    if (reply !== undefined) return super.send(reply.code, Hook.wireText(reply), false)
    return super.send(code, data, context)
  }

  // ---- session capture (capture/Recorder.ts), only for connections the recorder sampled ----

  captureTap: ConnectionTap | undefined = undefined

  /** Records this connection: the client's bytes as its command parser receives them (plaintext). */
  capture(tap: ConnectionTap): void {
    this.captureTap = tap
    if (this._parser) tapParser(this._parser, tap)
  }

  override _createParser(): SMTPStream {
    const parser = super._createParser()
    // the parser of the TLS session after STARTTLS; the first one is tapped by `capture`
    if (this.captureTap !== undefined) tapParser(parser, this.captureTap)
    return parser
  }
}

/** Capture: every chunk written into the command parser (the plaintext the client sent) goes to `tap` too. */
const tapParser = (parser: SMTPStream, tap: ConnectionTap) => {
  const write = parser.write.bind(parser) as (...args: Array<unknown>) => boolean
  parser.write = ((chunk: unknown, ...rest: Array<unknown>) => {
    if (typeof chunk === "string" || chunk instanceof Uint8Array) tap.client(chunk)
    return write(chunk, ...rest)
  }) as SMTPStream["write"]
}

/**
 * Capture: smtp-server's debug stream gives each reply exactly as written (`S:`) and the end of each TLS
 * handshake; both go to the tap of that connection. Everything else it logs is ignored.
 */
const captureLogger = (server: () => GatewayServer) => {
  const route = (entry: { readonly tnx?: unknown; readonly cid?: unknown; readonly cipher?: unknown }, message?: unknown, payload?: unknown) => {
    if (entry.tnx !== "send" && entry.tnx !== "starttls") return
    const tap = server().live.get(String(entry.cid))?.captureTap
    if (tap === undefined) return
    if (entry.tnx === "send" && message === "S:") tap.server(String(payload))
    else if (entry.tnx === "starttls") tap.tls(typeof entry.cipher === "string" ? entry.cipher : "")
  }
  const ignore = () => {}
  return { trace: ignore, debug: route, info: route, warn: ignore, error: ignore, fatal: ignore }
}

/** The outcome of a session's opening (onConnect's callback argument), handed to whoever waits, before or after it is known. */
class Opening {
  private done = false
  private error: Error | null | undefined = undefined
  private waiter: ((err?: Error | null) => void) | undefined = undefined

  settle(err?: Error | null): void {
    if (this.done) return
    this.done = true
    this.error = err
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.(err)
  }

  await(callback: (err?: Error | null) => void): void {
    if (this.done) callback(this.error)
    else this.waiter = callback
  }
}

/** SMTPServer whose connections are GatewayConnections, each findable by session id. */
class GatewayServer extends GuardedServer {
  readonly live = new Map<string, GatewayConnection>()
  /** Opens a session as onConnect does; connections call it when they are accepted (see `openEarly`). */
  openSession: ((session: SMTPServerSession, callback: (err?: Error | null) => void) => void) | undefined = undefined
  /** Session capture, when CAPTURE_DIR is set. */
  recorder: Recorder["Service"] | undefined = undefined

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    // SMTPServer.connect with our connection class
    const connection = new GatewayConnection(this, socket, socketOptions)
    this.connections.add(connection)
    this.live.set(connection.id, connection)
    const tap = this.recorder?.open(connection.id, connection.remoteAddress, connection.remotePort)
    if (tap !== undefined) connection.capture(tap)
    connection.on("error", (err: Error) => this._onError(err))
    connection.on("connect", (data) => this._onClientConnect(data))
    connection.init()
  }
}

const transportOf = (server: GatewayServer, id: string): Session.Transport => ({
  shutdown: (reply) => {
    const connection = server.live.get(id)
    if (connection === undefined) return
    connection.send(reply.code, Hook.wireText(reply))
    connection.close()
  },
  command: () => server.live.get(id)?.lastCommand ?? null
})

/** Errors a client causes (resets, broken handshakes): routine, logged at debug. */
const isClientNoise = (error: Error & { code?: unknown }) =>
  ["ECONNRESET", "EPIPE", "ETIMEDOUT", "SocketError", "TLSError", "ERR_TLS_HANDSHAKE_TIMEOUT", "ECONNECTION"].includes(
    String(error.code)
  ) || /TLS|SSL|handshake/i.test(error.message)

const listenFailure = (error: Error & { code?: unknown }, host: string, port: number, variable: string) => {
  switch (error.code) {
    case "EACCES":
      return new ListenError({
        message: `Cannot listen on ${host}:${port}: ports below 1024 need privileges. Set ${variable} to a port above 1023, ` +
          `or grant the capability: setcap cap_net_bind_service=+ep "$(command -v node)"`
      })
    case "EADDRINUSE":
      return new ListenError({
        message: `Cannot listen on ${host}:${port}: the port is in use by another process; stop it or set ${variable} to a free port`
      })
    default:
      return new ListenError({ message: `Cannot listen on ${host}:${port} (${variable}): ${error.message}` })
  }
}

const listen = (server: GatewayServer, host: string, port: number, variable: string) =>
  Effect.callback<number, ListenError>((resume) => {
    const onError = (error: Error) => resume(Effect.fail(listenFailure(error, host, port, variable)))
    server.server.once("error", onError)
    server.listen(port, host, () => {
      server.server.off("error", onError)
      const address = server.server.address()
      resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
    })
  })

/** Stops accepting (idempotent); TLS handshakes not yet done are dropped. Open sessions continue. */
const stopAccepting = (server: GatewayServer) =>
  Effect.sync(() => {
    if (server.server.listening) server.server.close()
    for (const socket of server._pendingSockets.values()) socket.destroy()
  })

export class SmtpListener extends Context.Service<SmtpListener, {
  /** The bound submission port (the configured one, or the one the OS chose for 0). */
  readonly port: number
  /** The bound implicit-TLS port, when SMTPS_PORT is set. */
  readonly smtpsPort: Option.Option<number>
  /** The open sessions, for GET /sessions. */
  readonly sessions: Effect.Effect<ReadonlyArray<Session.SessionSnapshot>>
  /** Ends one session with `421 4.3.2` (DELETE /sessions/:id); false when there is none. */
  readonly disconnect: (id: string) => Effect.Effect<boolean>
  /**
   * Readiness off, stop accepting, drain the sessions within SHUTDOWN_DRAIN_TIMEOUT (POST /drain, and
   * shutdown). Runs once: a second call, or shutdown during a drain, waits for the same report.
   */
  readonly drain: Effect.Effect<Session.DrainReport>
}>()("smtp-gateway/smtp/Listener") {
  static readonly layer = Layer.effect(
    SmtpListener,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const readiness = yield* Readiness
      const certificates = yield* Certificates
      const pair = yield* certificates.current
      const context = yield* Effect.context<Session.HookServices>()
      const runFork = Effect.runForkWith(context)
      // session capture (CAPTURE_DIR): optional, so a listener built without it records nothing
      const recorder = Option.filter(yield* Effect.serviceOption(Recorder), (r) => r.enabled).pipe(Option.getOrUndefined)
      // made first, so its finalizer (interrupt the sessions left) runs last
      const sessions = yield* Session.makeSessions

      const guard: GuardSettings = {
        handshakeTimeoutMillis: Duration.toMillis(config.limits.tlsHandshakeTimeout),
        trustedProxy: makeCidrMatcher(config.trustedProxies)
      }

      const makeServer = (secure: boolean): GatewayServer => {
        const options: SMTPServerOptions = {
          ...tlsOptions(pair),
          secure,
          name: config.smtp.hostname,
          banner: "ready",
          size: config.limits.maxMessageSize,
          authMethods: ["PLAIN", "LOGIN"],
          authRequiredMessage: Replies.authRequired.text,
          hideENHANCEDSTATUSCODES: false,
          hideDSN: true,
          hideREQUIRETLS: true,
          disableReverseLookup: true,
          socketTimeout: Duration.toMillis(config.limits.idleTimeout),
          maxClients: config.limits.maxConnections,
          maxCommandLength,
          logger: recorder === undefined ? false : captureLogger(() => server),
          // the session was opened when the connection was accepted (GatewayConnection.openEarly)
          onConnect: (session, callback) => {
            const opening = server.live.get(session.id)?.opening
            if (opening !== undefined) return opening.await(callback)
            sessions.connect(session, transportOf(server, session.id), callback)
          },
          onSecure: (socket, session, callback) =>
            sessions.hook(session, Commands.secured(socket), Hook.toCallback(callback)),
          onAuth: (auth, session, callback) =>
            sessions.hook(session, Commands.authenticate(auth), (outcome) =>
              Result.isSuccess(outcome)
                ? callback(null, { user: outcome.success.username })
                : callback(Hook.toServerError(outcome.failure))),
          onMailFrom: (address, session, callback) =>
            sessions.hook(session, Commands.mailFrom(address), Hook.toCallback(callback)),
          onRcptTo: (address, session, callback) =>
            sessions.hook(session, Commands.rcptTo(address), Hook.toCallback(callback)),
          onData: (stream, session, callback) =>
            sessions.hook(session, Commands.data(stream), (outcome) => {
              if (Result.isFailure(outcome)) {
                // smtp-server holds a DATA reply until the body ends; a closing one (DATA_MIN_RATE's 421)
                // cannot wait for a client that may never finish: it is sent now and the connection closed
                if (outcome.failure.closesConnection) transportOf(server, session.id).shutdown(outcome.failure)
                return callback(Hook.toServerError(outcome.failure))
              }
              const reply = outcome.success
              // smtp-server sends a success as 250; any other code goes out as the error path
              return reply.code === 250 ? callback(null, Hook.wireText(reply)) : callback(Hook.toServerError(reply))
            }),
          onClose: (session) => {
            server.live.delete(session.id)
            sessions.disconnected(session.id)
            if (recorder !== undefined) {
              runFork(recorder.close(session.id, {
                user: typeof session.user === "string" ? session.user : undefined,
                helo: typeof session.hostNameAppearsAs === "string" ? session.hostNameAppearsAs : undefined
              }))
            }
          }
        }
        const server = new GatewayServer(options)
        server.guard = guard
        server.openSession = (session, callback) => sessions.connect(session, transportOf(server, session.id), callback)
        server.recorder = recorder
        server.on("error", (error: Error & { code?: unknown; syscall?: unknown }) => {
          if (error.syscall === "listen") return // `listen` reports it
          const log = isClientNoise(error) ? Effect.logDebug : Effect.logWarning
          runFork(log("SMTP connection error").pipe(Effect.annotateLogs({ error: error.message, code: String(error.code ?? "") })))
        })
        return server
      }

      const submissionServer = makeServer(false)
      const port = yield* Effect.acquireRelease(
        listen(submissionServer, config.smtp.host, config.smtp.port, "SMTP_PORT"),
        () => stopAccepting(submissionServer)
      )
      const implicitTls = Option.map(config.smtp.smtpsPort, (smtpsPort) => ({ smtpsPort, server: makeServer(true) }))
      const smtpsPort = yield* Effect.forEach(
        Option.toArray(implicitTls),
        ({ server, smtpsPort }) =>
          Effect.acquireRelease(listen(server, config.smtp.host, smtpsPort, "SMTPS_PORT"), () => stopAccepting(server))
      ).pipe(Effect.map((ports) => Option.fromUndefinedOr(ports[0])))
      const servers = [submissionServer, ...Option.toArray(Option.map(implicitTls, ({ server }) => server))]
      // a renewed certificate (cert-manager) is used from the next handshake on, on every listener
      yield* certificates.watch((renewed) =>
        Effect.sync(() => {
          for (const server of servers) server.updateSecureContext(tlsOptions(renewed))
        })
      )

      const drainOnce = Effect.gen(function*() {
        yield* readiness.set("draining")
        yield* Effect.forEach(servers, stopAccepting, { discard: true })
        yield* Effect.logInfo("SMTP draining").pipe(Effect.annotateLogs({ sessions: yield* sessions.size }))
        const report = yield* sessions.drain(config.shutdownDrainTimeout)
        yield* Effect.logInfo("SMTP stopped").pipe(Effect.annotateLogs({ ...report }))
        return report
      })
      const drained = yield* Deferred.make<Session.DrainReport>()
      let drainStarted = false
      // the first caller runs the drain (uninterruptible: shutdown waits for it); later ones await it
      const drain = Effect.suspend(() => {
        if (drainStarted) return Deferred.await(drained)
        drainStarted = true
        return Effect.uninterruptible(Effect.tap(drainOnce, (report) => Deferred.succeed(drained, report)))
      })

      // released first: readiness off, stop accepting, drain
      yield* Effect.acquireRelease(
        Effect.andThen(
          readiness.set("ready"),
          Effect.logInfo("SMTP listening").pipe(
            Effect.annotateLogs({
              host: config.smtp.host,
              port,
              smtps_port: Option.getOrNull(smtpsPort),
              certificate: certificates.source,
              // what the default (a quarter of the process's memory) came to
              max_message_memory: config.limits.maxMessageMemory
            })
          )
        ),
        () => Effect.asVoid(drain)
      )

      return SmtpListener.of({ port, smtpsPort, sessions: sessions.snapshot, disconnect: sessions.disconnect, drain })
    })
  )
}

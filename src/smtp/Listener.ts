/**
 * SmtpListener: the smtp-server instances (submission with STARTTLS, optional implicit TLS) as a scoped
 * service. Listens on acquire; on release stops accepting, drains sessions and closes them with
 * `421 4.3.2`. Adapter only: sockets, TLS and SMTP syntax are smtp-server's, policy is the services'.
 */
import type * as net from "node:net"
import type * as tls from "node:tls"
import { Context, Duration, Effect, Layer, Option, Result, Schema } from "effect"
import { SMTPServer, type SMTPServerOptions } from "smtp-server"
import { SMTPConnection, type SMTPConnectionOptions } from "smtp-server/lib/smtp-connection.js"
import { Readiness } from "../admin/Readiness.ts"
import { GatewayConfig } from "../Config.ts"
import { Replies, type Reply } from "../domain/Reply.ts"
import * as Hook from "./Hook.ts"
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
export const greetingDelayMillis = 5

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
  return undefined
}

/**
 * smtp-server's connection with two documented overrides: a shorter greeting delay (`init`), and
 * `send`, which makes every reply exact: text from `Hook.wireText` goes out as is (smtp-server would
 * otherwise put its own enhanced code in front), library replies are mapped to our table, and AUTH is
 * advertised in EHLO only once TLS is up.
 */
class GatewayConnection extends SMTPConnection {
  override init(): void {
    // SMTPConnection.init with `greetingDelayMillis` instead of 100 ms
    this._setListeners(() => {
      const maxClients = this._server.options.maxClients
      if (maxClients && this._server.connections.size > maxClients) {
        return this.send(421, this.name + " Too many connected clients, try again in a moment", false)
      }
      setTimeout(() => this.connectionReady(), greetingDelayMillis).unref()
    })
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
}

/** SMTPServer whose connections are GatewayConnections, each findable by session id. */
class GatewayServer extends SMTPServer {
  readonly live = new Map<string, GatewayConnection>()

  override connect(socket: net.Socket | tls.TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    // SMTPServer.connect with our connection class
    const connection = new GatewayConnection(this, socket, socketOptions)
    this.connections.add(connection)
    this.live.set(connection.id, connection)
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
  }
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
      // made first, so its finalizer (interrupt the sessions left) runs last
      const sessions = yield* Session.makeSessions

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
          logger: false,
          onConnect: (session, callback) => sessions.connect(session, transportOf(server, session.id), callback),
          onSecure: (socket, session, callback) =>
            sessions.hook(session, Session.secured(socket), Hook.toCallback(callback)),
          onAuth: (auth, session, callback) =>
            sessions.hook(session, Session.authenticate(auth), (outcome) =>
              Result.isSuccess(outcome)
                ? callback(null, { user: outcome.success.username })
                : callback(Hook.toServerError(outcome.failure))),
          onMailFrom: (address, session, callback) =>
            sessions.hook(session, Session.mailFrom(address), Hook.toCallback(callback)),
          onRcptTo: (address, session, callback) =>
            sessions.hook(session, Session.rcptTo(address), Hook.toCallback(callback)),
          onData: (stream, session, callback) =>
            sessions.hook(session, Session.data(stream), (outcome) => {
              if (Result.isFailure(outcome)) return callback(Hook.toServerError(outcome.failure))
              const reply = outcome.success
              // smtp-server sends a success as 250; any other code goes out as the error path
              return reply.code === 250 ? callback(null, Hook.wireText(reply)) : callback(Hook.toServerError(reply))
            }),
          onClose: (session) => {
            server.live.delete(session.id)
            sessions.disconnected(session.id)
          }
        }
        const server = new GatewayServer(options)
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

      // released first: readiness off, stop accepting, drain
      yield* Effect.acquireRelease(
        Effect.andThen(
          readiness.set("ready"),
          Effect.logInfo("SMTP listening").pipe(
            Effect.annotateLogs({
              host: config.smtp.host,
              port,
              smtps_port: Option.getOrNull(smtpsPort),
              certificate: certificates.source
            })
          )
        ),
        () =>
          Effect.gen(function*() {
            yield* readiness.set("draining")
            yield* Effect.forEach(servers, stopAccepting, { discard: true })
            yield* Effect.logInfo("SMTP draining").pipe(Effect.annotateLogs({ sessions: yield* sessions.size }))
            yield* sessions.drain(config.shutdownDrainTimeout)
            yield* Effect.logInfo("SMTP stopped")
          })
      )

      return SmtpListener.of({ port, smtpsPort, sessions: sessions.snapshot, disconnect: sessions.disconnect })
    })
  )
}

/**
 * A small SMTP line client as Effects, for replay (capture/Replay.ts) and raw-socket tests: connect
 * (plain or implicit TLS), send raw bytes or a line, read one (possibly multi-line) reply, upgrade with
 * STARTTLS, close. It checks nothing about the replies, and it is no mail client (no MIME, no retries).
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Duration, Effect, Result, Schema, type Scope } from "effect"
import { makeWaiters } from "./Waiters.ts"

export class SmtpClientError extends Schema.TaggedError<SmtpClientError>()("SmtpClientError", {
  message: Schema.String
}) {}

/** One reply: its code and every line as received (without CRLF). */
export interface SmtpReply {
  readonly code: number
  readonly lines: ReadonlyArray<string>
  /** The last line, e.g. `250 2.0.0 Ok: queued as X`. */
  readonly last: string
}

export interface SmtpClientOptions {
  readonly port: number
  readonly host?: string | undefined
  /** Implicit TLS (SMTPS) from the first byte. */
  readonly implicitTls?: boolean | undefined
  /** Verify the server's certificate against `host` (default false: test and staging gateways are self-signed). */
  readonly verifyTls?: boolean | undefined
  /** Extra client TLS options (implicit TLS and STARTTLS), e.g. `maxVersion`. */
  readonly tls?: tls.ConnectionOptions | undefined
  /** How long to wait for a reply (default 5 seconds). */
  readonly timeout?: Duration.Input | undefined
}

export interface SmtpClient {
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, SmtpClientError>
  /** Sends `line` followed by CRLF. */
  readonly sendLine: (line: string) => Effect.Effect<void, SmtpClientError>
  /** Reads the next reply; fails when the connection ends or nothing complete arrives in time. */
  readonly readReply: Effect.Effect<SmtpReply, SmtpClientError>
  /** Upgrades to TLS (after the server's 220 to STARTTLS); certificates verified only with `verifyTls`. */
  readonly startTls: Effect.Effect<tls.TLSSocket, SmtpClientError>
  /** True once the server closed the connection. */
  readonly isClosed: Effect.Effect<boolean>
  /** Waits until the server has closed the connection (or the timeout). */
  readonly awaitClose: Effect.Effect<void, SmtpClientError>
  readonly close: Effect.Effect<void>
  readonly socket: () => net.Socket | tls.TLSSocket
}

const isFinalLine = (line: string) => /^\d{3}(?: |$)/.test(line)

/** Connects; the connection is closed with the scope. */
export const connect = (options: SmtpClientOptions): Effect.Effect<SmtpClient, SmtpClientError, Scope.Scope> =>
  Effect.gen(function*() {
    const host = options.host ?? "127.0.0.1"
    const timeout = Duration.fromInputUnsafe(options.timeout ?? "5 seconds")
    const tlsOptions: tls.ConnectionOptions = options.verifyTls === true
      ? { rejectUnauthorized: true, ...(net.isIP(host) === 0 ? { servername: host } : {}), ...options.tls }
      : { rejectUnauthorized: false, servername: "localhost", ...options.tls }
    let socket: net.Socket | tls.TLSSocket
    let buffer = ""
    const lines: Array<string> = []
    let closed = false
    const waiters = makeWaiters()

    const onData = (chunk: Buffer) => {
      buffer += chunk.toString("utf8")
      let at: number
      while ((at = buffer.indexOf("\r\n")) >= 0) {
        lines.push(buffer.slice(0, at))
        buffer = buffer.slice(at + 2)
      }
      waiters.wake()
    }
    const onClose = () => {
      closed = true
      waiters.wake()
    }
    const attach = (s: net.Socket | tls.TLSSocket) => {
      socket = s
      s.on("data", onData)
      s.on("close", onClose)
      s.on("end", onClose)
      s.on("error", onClose)
    }

    yield* Effect.acquireRelease(
      Effect.callback<void, SmtpClientError>((resume) => {
        const s = options.implicitTls === true
          ? tls.connect({ host, port: options.port, ...tlsOptions })
          : net.connect({ host, port: options.port })
        const onError = (error: Error) =>
          resume(Effect.fail(new SmtpClientError({ message: `cannot connect to ${host}:${options.port}: ${error.message}` })))
        s.once("error", onError)
        s.once(options.implicitTls === true ? "secureConnect" : "connect", () => {
          s.off("error", onError)
          attach(s)
          resume(Effect.void)
        })
      }),
      () => Effect.sync(() => socket.destroy())
    )

    /** Waits until `ready()` holds (checked after every chunk, close or error) or the timeout. */
    const waitFor = (ready: () => boolean, what: string) =>
      waiters.until(
        () => (ready() ? Result.void : undefined),
        timeout,
        () => new SmtpClientError({ message: `timed out after ${Duration.format(timeout)} waiting for ${what}` })
      )

    const readReply = Effect.gen(function*() {
      yield* waitFor(() => closed || lines.some(isFinalLine), "a reply")
      const end = lines.findIndex(isFinalLine)
      if (end < 0) {
        const partial = lines.splice(0).concat(buffer === "" ? [] : [buffer])
        return yield* new SmtpClientError({
          message: `the server closed the connection${partial.length > 0 ? ` after "${partial.join("\\r\\n")}"` : ""}`
        })
      }
      const reply = lines.splice(0, end + 1)
      const last = reply[reply.length - 1]!
      return { code: Number(last.slice(0, 3)), lines: reply, last }
    })

    const write = (data: string | Uint8Array) =>
      Effect.callback<void, SmtpClientError>((resume) => {
        if (closed || socket.destroyed) {
          return resume(Effect.fail(new SmtpClientError({ message: "cannot write: the connection is closed" })))
        }
        socket.write(data, (error) =>
          resume(error ? Effect.fail(new SmtpClientError({ message: `write failed: ${error.message}` })) : Effect.void))
      })

    const startTls = Effect.callback<tls.TLSSocket, SmtpClientError>((resume) => {
      const plain = socket
      plain.off("data", onData)
      plain.off("close", onClose)
      plain.off("end", onClose)
      plain.off("error", onClose)
      const secure = tls.connect({ socket: plain, ...tlsOptions })
      const onError = (error: Error) =>
        resume(Effect.fail(new SmtpClientError({ message: `TLS handshake failed: ${error.message}` })))
      secure.once("error", onError)
      secure.once("secureConnect", () => {
        secure.off("error", onError)
        attach(secure)
        resume(Effect.succeed(secure))
      })
    })

    return {
      write,
      sendLine: (line) => write(line + "\r\n"),
      readReply,
      startTls,
      isClosed: Effect.sync(() => closed),
      awaitClose: waitFor(() => closed, "the server to close the connection"),
      close: Effect.sync(() => {
        socket.end()
      }),
      socket: () => socket
    } satisfies SmtpClient
  })

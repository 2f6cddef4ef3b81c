/**
 * The benchmark's SMTP load generator, on raw sockets (node:net, node:tls): plain or STARTTLS, AUTH
 * PLAIN, PIPELINING, connections × messages, a new connection per message, a rate cap for soaks, and
 * idle sessions. Every reply is checked; a message counts only when MAIL, every RCPT, DATA and the final
 * reply all succeeded. It measures; it does not judge (bench/run.ts compares with the targets).
 */
import * as net from "node:net"
import * as tls from "node:tls"

export interface Reply {
  readonly code: number
  readonly text: string
}

class ConnectionError extends Error {}

/** The server answered 421 to MAIL and closes (e.g. a messages-per-session limit): reconnect, send again. */
class ServerClosing extends Error {}

/** Splits the server's bytes into (multi-line) replies and hands them out in order. */
class ReplyReader {
  private text = ""
  private lines: Array<string> = []
  private readonly ready: Array<Reply> = []
  private readonly waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = []
  private error: Error | undefined

  feed(chunk: Buffer): void {
    this.text += chunk.toString("latin1")
    let i: number
    while ((i = this.text.indexOf("\n")) >= 0) {
      const line = this.text.charCodeAt(i - 1) === 13 ? this.text.slice(0, i - 1) : this.text.slice(0, i)
      this.text = this.text.slice(i + 1)
      this.lines.push(line)
      if (line.length < 4 || line[3] !== "-") {
        const reply: Reply = { code: Number(line.slice(0, 3)), text: this.lines.join(" | ") }
        this.lines = []
        const waiter = this.waiting.shift()
        if (waiter) waiter.resolve(reply)
        else this.ready.push(reply)
      }
    }
  }

  /** Whether bytes arrived that are not yet a whole reply (a client must not upgrade to TLS then). */
  get pendingBytes(): number {
    return this.text.length + this.ready.length
  }

  fail(error: Error): void {
    if (this.error) return
    this.error = error
    for (const waiter of this.waiting.splice(0)) waiter.reject(error)
  }

  next(): Promise<Reply> {
    const reply = this.ready.shift()
    if (reply) return Promise.resolve(reply)
    if (this.error) return Promise.reject(this.error)
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }))
  }
}

export interface SessionOptions {
  readonly host: string
  readonly port: number
  /** Upgrade with STARTTLS after the first EHLO. */
  readonly starttls: boolean
  /** AUTH PLAIN after EHLO (after TLS when `starttls`). */
  readonly auth?: { readonly user: string; readonly pass: string } | undefined
  /** No reply within this many ms breaks the connection (default 30 s). */
  readonly timeoutMs?: number | undefined
}

/** One SMTP client connection, from greeting to QUIT. */
export class Session {
  private socket: net.Socket
  private reader = new ReplyReader()
  /** Milliseconds from `connect()` to the 220 greeting. */
  greetingMs = 0
  pipelining = false

  private constructor(socket: net.Socket, private readonly timeoutMs: number) {
    this.socket = socket
    this.attach(socket)
  }

  private attach(socket: net.Socket): void {
    socket.setNoDelay(true)
    socket.setTimeout(this.timeoutMs, () => socket.destroy(new ConnectionError(`no reply in ${this.timeoutMs} ms`)))
    socket.on("data", (chunk: Buffer) => this.reader.feed(chunk))
    socket.on("error", (error) => this.reader.fail(error))
    socket.on("close", () => this.reader.fail(new ConnectionError("connection closed")))
  }

  /** Connects, reads the greeting, EHLO, STARTTLS and AUTH as asked; throws on any unexpected reply. */
  static async open(options: SessionOptions): Promise<Session> {
    const t0 = performance.now()
    const socket = net.connect({ host: options.host, port: options.port })
    const session = new Session(socket, options.timeoutMs ?? 30_000)
    try {
      await session.expect(await session.reader.next(), 220, "greeting")
      session.greetingMs = performance.now() - t0
      let ehlo = await session.command("EHLO bench.localhost", 250)
      if (options.starttls) {
        if (!/STARTTLS/i.test(ehlo.text)) throw new ConnectionError(`no STARTTLS offered: ${ehlo.text}`)
        await session.command("STARTTLS", 220)
        await session.upgrade()
        ehlo = await session.command("EHLO bench.localhost", 250)
      }
      session.pipelining = /\bPIPELINING\b/i.test(ehlo.text)
      if (options.auth) {
        const token = Buffer.from(`\0${options.auth.user}\0${options.auth.pass}`).toString("base64")
        await session.command(`AUTH PLAIN ${token}`, 235)
      }
      return session
    } catch (error) {
      session.socket.destroy()
      throw error
    }
  }

  private async upgrade(): Promise<void> {
    if (this.reader.pendingBytes > 0) throw new ConnectionError("bytes after the STARTTLS reply")
    const plain = this.socket
    plain.removeAllListeners("data")
    plain.removeAllListeners("close")
    plain.removeAllListeners("error")
    plain.setTimeout(0)
    plain.on("error", () => {}) // reported by the TLS socket
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: "localhost" })
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve())
      secure.once("error", reject)
    })
    secure.removeAllListeners("error")
    this.socket = secure
    this.attach(secure)
  }

  private expect(reply: Reply, code: number, what: string): Reply {
    if (reply.code !== code) throw new ConnectionError(`${what}: expected ${code}, got ${reply.text}`)
    return reply
  }

  async command(line: string, code: number): Promise<Reply> {
    this.socket.write(line + "\r\n")
    return this.expect(await this.reader.next(), code, line.split(" ")[0] ?? line)
  }

  /**
   * One transaction. Resolves to `undefined` when it was accepted (250 after the dot), or to the reason
   * it failed; throws only when the connection broke.
   */
  async send(mailFrom: string, recipients: ReadonlyArray<string>, message: ReadonlyArray<Buffer>): Promise<string | undefined> {
    const commands = [`MAIL FROM:<${mailFrom}>`, ...recipients.map((r) => `RCPT TO:<${r}>`), "DATA"]
    const replies: Array<Reply> = []
    if (this.pipelining) {
      this.socket.write(commands.join("\r\n") + "\r\n")
      for (let i = 0; i < commands.length; i++) {
        const reply = await this.reader.next()
        if (i === 0 && reply.code === 421) throw new ServerClosing(reply.text)
        replies.push(reply)
      }
    } else {
      for (const command of commands) {
        this.socket.write(command + "\r\n")
        const reply = await this.reader.next()
        if (replies.length === 0 && reply.code === 421) throw new ServerClosing(reply.text)
        replies.push(reply)
        if (reply.code >= 400) break
      }
    }
    const bad = replies.slice(0, -1).find((r) => r.code !== 250)
    const data = replies[replies.length - 1]
    if (data === undefined || data.code !== 354) {
      // refused before DATA: reset the transaction and go on
      await this.command("RSET", 250)
      return bad?.text ?? data?.text ?? "no reply"
    }
    this.socket.cork()
    for (const part of message) this.socket.write(part)
    this.socket.uncork()
    const final = await this.reader.next()
    if (bad !== undefined) return bad.text
    return final.code === 250 ? undefined : final.text
  }

  async quit(): Promise<void> {
    try {
      await this.command("QUIT", 221)
    } catch {
      // the server may close first
    }
    this.socket.destroy()
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** Builds message number `n` as the bytes to send after DATA's 354, dot-stuffed and ending in CRLF.CRLF. */
export type MessageSource = (n: number) => ReadonlyArray<Buffer>

/** A text message of about `size` bytes whose only per-message part is its Message-ID. */
export const textMessage = (options: { readonly size: number; readonly from: string; readonly to: ReadonlyArray<string>; readonly tag: string }): MessageSource => {
  const head = [
    `From: Bench Sender <${options.from}>`,
    `To: ${options.to.map((t) => `<${t}>`).join(", ")}`,
    `Subject: benchmark message`,
    "Date: Sat, 21 Nov 2026 12:00:00 +0000",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 7bit"
  ].join("\r\n") + "\r\n\r\n"
  const line = "The quick brown fox jumps over the lazy dog, and the benchmark counts it all.\r\n"
  let body = ""
  while (head.length + body.length + 80 < options.size) body += line
  const suffix = Buffer.from("\r\n" + head + body + ".\r\n")
  const prefix = Buffer.from("Message-ID: <")
  return (n) => [prefix, Buffer.from(`${options.tag}.${n}@bench.localhost>`), suffix]
}

/** A multipart message of about `size` bytes: a text part and three base64 attachments (PDF, PNG, CSV). */
export const largeMessage = (options: { readonly size: number; readonly from: string; readonly to: ReadonlyArray<string>; readonly tag: string }): MessageSource => {
  const boundary = "bench-boundary-7c1f"
  const text = "Three attachments follow.\r\n".repeat(40)
  const attachments = [
    { name: "report.pdf", type: "application/pdf" },
    { name: "chart.png", type: "image/png" },
    { name: "data.csv", type: "text/csv" }
  ]
  const room = options.size - 4096
  const perAttachment = Math.floor((room / attachments.length) * 3 / 4 / 57) * 57 // raw bytes, whole base64 lines
  let seed = 12345
  const random = Buffer.alloc(perAttachment)
  for (let i = 0; i < random.length; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    random[i] = seed >>> 16 & 0xff
  }
  const encoded = (random.toString("base64").match(/.{1,76}/g) ?? []).join("\r\n")
  const parts = [
    `From: Bench Sender <${options.from}>\r\nTo: ${options.to.map((t) => `<${t}>`).join(", ")}\r\nSubject: large benchmark message\r\n` +
    `Date: Sat, 21 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${boundary}"\r\n\r\n`,
    `--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${text}\r\n`,
    ...attachments.map((a) =>
      `--${boundary}\r\nContent-Type: ${a.type}; name="${a.name}"\r\nContent-Disposition: attachment; filename="${a.name}"\r\n` +
      `Content-Transfer-Encoding: base64\r\n\r\n${encoded}\r\n`
    ),
    `--${boundary}--\r\n.\r\n`
  ]
  const suffix = Buffer.from("\r\n" + parts.join(""))
  const prefix = Buffer.from("Message-ID: <")
  return (n) => [prefix, Buffer.from(`${options.tag}.${n}@bench.localhost>`), suffix]
}

export const messageBytes = (source: MessageSource): number => source(0).reduce((n, b) => n + b.length, 0) - 3

export interface LoadOptions extends SessionOptions {
  readonly connections: number
  /** Per connection (or per worker when `newConnectionPerMessage`); ignored when `durationSec` is set. */
  readonly messagesPerConnection: number
  readonly newConnectionPerMessage: boolean
  readonly mailFrom: string
  readonly recipients: ReadonlyArray<string>
  readonly message: MessageSource
  /** Soak: run for this long, at most `rate` messages per second in all (open schedule). */
  readonly durationSec?: number | undefined
  readonly rate?: number | undefined
  /** Called after each accepted message: seconds since start, latency ms. */
  readonly onAccepted?: ((t: number, latencyMs: number) => void) | undefined
}

export interface LoadResult {
  readonly accepted: number
  readonly failed: number
  /** The first reasons of failure (at most 10), with how many times each was seen. */
  readonly failures: Record<string, number>
  readonly wallSec: number
  /** MAIL to the final reply, per accepted message, ms. */
  readonly latencies: Array<number>
  /** Connect to 220, per connection, ms. */
  readonly greetings: Array<number>
  /** Messages that started later than their slot (soak only), ms behind at worst. */
  readonly maxLagMs: number
  /** Times the server said 421 at MAIL and the message was sent again on a new connection. */
  readonly reconnects: number
}

/** Runs the load to completion and reports what the server accepted. */
export const runLoad = async (options: LoadOptions): Promise<LoadResult> => {
  let accepted = 0
  let failed = 0
  let counter = 0
  let maxLagMs = 0
  let reconnects = 0
  const failures: Record<string, number> = {}
  const latencies: Array<number> = []
  const greetings: Array<number> = []
  const fail = (reason: string, count = 1) => {
    failed += count
    const key = reason.slice(0, 160)
    if (failures[key] !== undefined || Object.keys(failures).length < 10) failures[key] = (failures[key] ?? 0) + count
  }
  const t0 = performance.now()
  const soak = options.durationSec !== undefined
  const endAt = soak ? t0 + options.durationSec! * 1000 : Infinity
  const interval = options.rate !== undefined ? 1000 / options.rate : 0
  let slot = 0

  /** Waits for the next message's turn; false when the soak is over. */
  const turn = async (): Promise<boolean> => {
    if (!soak) return true
    const at = t0 + slot++ * interval
    if (at >= endAt || performance.now() >= endAt) return false
    const wait = at - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    else if (-wait > maxLagMs) maxLagMs = -wait
    return true
  }

  const transaction = async (session: Session): Promise<void> => {
    const start = performance.now()
    const reason = await session.send(options.mailFrom, options.recipients, options.message(counter++))
    if (reason !== undefined) return fail(reason)
    const latency = performance.now() - start
    accepted++
    latencies.push(latency)
    options.onAccepted?.((performance.now() - t0) / 1000, latency)
  }

  const open = async (): Promise<Session> => {
    const session = await Session.open(options)
    greetings.push(session.greetingMs)
    return session
  }

  const worker = async (): Promise<void> => {
    if (options.newConnectionPerMessage) {
      for (let i = 0; soak || i < options.messagesPerConnection; i++) {
        if (!(await turn())) return
        let session: Session | undefined
        try {
          session = await open()
          await transaction(session)
          await session.quit()
        } catch (error) {
          session?.destroy()
          fail(`connection: ${error instanceof Error ? error.message : String(error)}`)
        }
      }
      return
    }
    let done = 0
    let session: Session | undefined
    try {
      session = await open()
      for (; soak || done < options.messagesPerConnection; done++) {
        if (!(await turn())) break
        try {
          await transaction(session)
        } catch (error) {
          // a 421 at MAIL (the server's per-session limit) is what a real client reconnects for; in a
          // soak, so is a broken connection (the message in flight counts as failed)
          if (!(error instanceof ServerClosing) && !soak) throw error
          if (!(error instanceof ServerClosing)) fail(`connection: ${error instanceof Error ? error.message : String(error)}`)
          session.destroy()
          reconnects++
          session = await open()
          if (error instanceof ServerClosing) await transaction(session)
        }
      }
      await session.quit()
    } catch (error) {
      // the message in flight and the rest of this connection's share are lost
      fail(`connection: ${error instanceof Error ? error.message : String(error)}`, soak ? 1 : options.messagesPerConnection - done)
    } finally {
      session?.destroy()
    }
  }

  await Promise.all(Array.from({ length: options.connections }, worker))
  return { accepted, failed, failures, wallSec: (performance.now() - t0) / 1000, latencies, greetings, maxLagMs, reconnects }
}

/** Opens `count` sessions (at most `concurrency` handshakes at once) and keeps them open. */
export const openIdle = async (options: SessionOptions & { readonly count: number; readonly concurrency: number }): Promise<{ sessions: Array<Session>; failed: number; failures: Record<string, number> }> => {
  const sessions: Array<Session> = []
  const failures: Record<string, number> = {}
  let failed = 0
  let next = 0
  const worker = async () => {
    while (next < options.count) {
      next++
      try {
        sessions.push(await Session.open(options))
      } catch (error) {
        failed++
        const key = (error instanceof Error ? error.message : String(error)).slice(0, 160)
        failures[key] = (failures[key] ?? 0) + 1
      }
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, worker))
  return { sessions, failed, failures }
}

export const percentile = (sorted: ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

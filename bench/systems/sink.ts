/**
 * The benchmark's baseline: a bare smtp-server + mailparser sink that posts each message as JSON to the
 * HTTP upstream (keep-alive) and answers 250 once the upstream said 2xx: what the libraries cost with
 * nothing of the gateway around them. smtp-server's defaults are kept (including its 100 ms early-talker
 * wait). Not a product: one user, no policy, no limits beyond smtp-server's.
 * Env: SINK_PORT, SINK_MODE (plain | tls), UPSTREAM_URL, TLS_CERT_PATH, TLS_KEY_PATH, SINK_USER, SINK_PASS.
 *
 * SINK_EXTRAS (the `sink-plus` system) adds, in plain Node, work the gateway does beside the libraries,
 * to measure what it costs without Effect: `worker` (parse in a worker thread, as the gateway does, not
 * on the event loop), `logs` (the gateway's JSON lines at LOG_LEVEL=info: connection opened and closed,
 * message accepted, transaction ended), `spans` (the gateway's spans, 7 a message and 2 a connection,
 * exported as OTLP/HTTP JSON to OTEL_EXPORTER_OTLP_ENDPOINT each second), `checks` (the SHA-256 of the
 * message, a duplicate-window key and entry, an upstream timeout, counters and a latency histogram).
 * None of it is the gateway's code; it is a floor for what the gateway's work can cost.
 */
import * as crypto from "node:crypto"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import type { Readable } from "node:stream"
import { Worker } from "node:worker_threads"
import { simpleParser } from "mailparser"
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerAuthenticationResponse, type SMTPServerSession } from "smtp-server"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`${name} is required`)
  return value
}
const tlsMode = env("SINK_MODE") === "tls"
const upstream = new URL(env("UPSTREAM_URL"))
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
const user = process.env.SINK_USER ?? "bench"
const pass = process.env.SINK_PASS ?? "bench-password"

const extras = new Set((process.env.SINK_EXTRAS ?? "").split(",").filter((e) => e !== ""))

interface Parts {
  readonly messageId: string | null
  readonly from: unknown
  readonly to: unknown
  readonly subject: string | null
  readonly text: string | null
  readonly html: string | null
  readonly headerLines: ReadonlyArray<{ key: string; line: string }>
  readonly attachments: ReadonlyArray<{ filename: string | null; contentType: string; size: number; content: Uint8Array }>
}

// ---- worker: mailparser in a worker thread ----
const worker = extras.has("worker") ? new Worker(new URL("./sink-parse-worker.mjs", import.meta.url)) : undefined
const jobs = new Map<number, { resolve: (parts: Parts) => void; reject: (e: Error) => void }>()
let nextJob = 0
worker?.on("message", (m: { id: number; mail?: Parts; error?: string }) => {
  const job = jobs.get(m.id)
  jobs.delete(m.id)
  if (m.mail !== undefined) job?.resolve(m.mail)
  else job?.reject(new Error(m.error))
})
const parseInWorker = (bytes: Buffer): Promise<Parts> =>
  new Promise((resolve, reject) => {
    const id = nextJob++
    jobs.set(id, { resolve, reject })
    worker!.postMessage({ id, bytes: new Uint8Array(bytes) })
  })

// ---- logs: one JSON line per event, on stdout ----
const log = extras.has("logs")
  ? (message: string, fields: Record<string, unknown>) =>
    void process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: "info", message, ...fields }) + "\n")
  : () => {}

// ---- spans: OTLP/HTTP JSON, batched each second ----
interface Span { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; startTimeUnixNano: string; endTimeUnixNano: string; attributes: Array<unknown>; status: { code: number } }
const spans: Array<Span> = []
const collector = process.env.OTEL_EXPORTER_OTLP_ENDPOINT
const nowNanos = () => String(BigInt(Date.now()) * 1_000_000n)
const span = extras.has("spans")
  ? (name: string, traceId: string, parentSpanId: string | undefined, attributes: Record<string, string | number>) => {
    const spanId = crypto.randomBytes(8).toString("hex")
    spans.push({
      traceId, spanId, ...(parentSpanId === undefined ? {} : { parentSpanId }), name, kind: 1,
      startTimeUnixNano: nowNanos(), endTimeUnixNano: nowNanos(),
      attributes: Object.entries(attributes).map(([key, value]) => ({ key, value: typeof value === "number" ? { intValue: value } : { stringValue: value } })),
      status: { code: 0 }
    })
    return spanId
  }
  : () => ""
if (extras.has("spans") && collector !== undefined) {
  setInterval(() => {
    if (spans.length === 0) return
    const batch = spans.splice(0, spans.length)
    const body = JSON.stringify({ resourceSpans: [{ resource: { attributes: [{ key: "service.name", value: { stringValue: "sink-plus" } }] }, scopeSpans: [{ scope: { name: "sink-plus" }, spans: batch }] }] })
    const req = http.request(`${collector}/v1/traces`, { method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => res.resume())
    req.on("error", () => {})
    req.end(body)
  }, 1000).unref()
}

// ---- checks: digest, duplicate window, counters, histogram ----
const window = new Map<string, string>()
const counters = { received: 0, accepted: 0 }
const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
const latencyCounts = new Array<number>(latencyBuckets.length + 1).fill(0)
const observe = (seconds: number) => {
  const i = latencyBuckets.findIndex((b) => seconds <= b)
  latencyCounts[i < 0 ? latencyBuckets.length : i]!++
}
const traceOf = new WeakMap<SMTPServerSession, string>()
const messagesOf = new WeakMap<SMTPServerSession, number>()
const openedAt = new WeakMap<SMTPServerSession, number>()

const post = (body: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        path: upstream.pathname,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), authorization: "Bearer bench" }
      },
      (res) => {
        res.resume()
        res.on("end", () => resolve(res.statusCode ?? 0))
      }
    )
    req.on("error", reject)
    if (extras.has("checks")) {
      const timer = setTimeout(() => req.destroy(new Error("upstream timeout")), 10_000)
      req.on("close", () => clearTimeout(timer))
    }
    req.end(body)
  })

const bodyOf = (session: SMTPServerSession, parts: Parts): string =>
  JSON.stringify({
    envelope: { mail_from: session.envelope.mailFrom === false ? null : session.envelope.mailFrom.address, rcpt_to: session.envelope.rcptTo.map((r) => r.address) },
    message_id: parts.messageId,
    from: parts.from,
    to: parts.to,
    subject: parts.subject,
    text: parts.text,
    html: parts.html,
    headers: parts.headerLines.map((h) => ({ name: h.key, value: h.line })),
    attachments: parts.attachments.map((a) => ({
      filename: a.filename,
      content_type: a.contentType,
      size: a.size,
      content_base64: Buffer.from(a.content.buffer, a.content.byteOffset, a.content.byteLength).toString("base64")
    }))
  })

/** The message's bytes, parsed: in the worker, or by simpleParser reading the stream here. */
const parse = (stream: Readable): Promise<{ parts: Parts; digest: string | null; size: number }> => {
  if (worker === undefined) {
    return simpleParser(stream, {}).then((mail) => ({
      digest: null,
      size: 0,
      parts: {
        messageId: mail.messageId ?? null,
        from: mail.from?.value ?? [],
        to: Array.isArray(mail.to) ? mail.to.flatMap((t) => t.value) : mail.to?.value ?? [],
        subject: mail.subject ?? null,
        text: mail.text ?? null,
        html: mail.html === false ? null : mail.html ?? null,
        headerLines: mail.headerLines,
        attachments: mail.attachments.map((a) => ({ filename: a.filename ?? null, contentType: a.contentType, size: a.size, content: a.content }))
      }
    }))
  }
  return new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    const hash = extras.has("checks") ? crypto.createHash("sha256") : undefined
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      hash?.update(chunk)
    })
    stream.on("error", reject)
    stream.on("end", () => {
      const bytes = Buffer.concat(chunks)
      parseInWorker(bytes).then((parts) => resolve({ parts, digest: hash?.digest("hex") ?? null, size: bytes.length }), reject)
    })
  })
}

type DataCallback = (error?: Error | null, message?: string) => void

const answer = (callback: DataCallback, status: number) =>
  status >= 200 && status < 300 ? callback(null, "Ok: queued") : callback(new Error(`upstream answered ${status}`))
const fail = (callback: DataCallback) => (e: unknown) => callback(e instanceof Error ? e : new Error(String(e)))

/** The bare sink: parse, post, answer. */
const bareData = (stream: Readable, session: SMTPServerSession, callback: DataCallback) => {
  parse(stream).then(({ parts }) => post(bodyOf(session, parts))).then((status) => answer(callback, status), fail(callback))
}

type AuthCallback = (error: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void

/** The one bench user, or `535`. */
const authenticate = (auth: SMTPServerAuthentication, callback: AuthCallback) =>
  auth.username === user && auth.password === pass
    ? callback(null, { user: auth.username })
    : callback(new Error("Authentication credentials invalid"))

/** sink-plus: the gateway's work around the same steps (SINK_EXTRAS). */
const withExtras = {
  onConnect: (session: SMTPServerSession, callback: (error?: Error) => void) => {
    const traceId = crypto.randomBytes(16).toString("hex")
    traceOf.set(session, traceId)
    span("smtp.session", traceId, undefined, { "session.id": session.id, "net.peer.ip": session.remoteAddress })
    openedAt.set(session, performance.now())
    log("connection opened", { session_id: session.id, peer: `${session.remoteAddress}:${session.remotePort}` })
    callback()
  },
  onClose: (session: SMTPServerSession) => {
    const duration = Math.round(performance.now() - (openedAt.get(session) ?? performance.now()))
    log("connection closed", { session_id: session.id, duration_ms: duration, messages: messagesOf.get(session) ?? 0 })
  },
  onAuth: (auth: SMTPServerAuthentication, session: SMTPServerSession, callback: AuthCallback) => {
    span("smtp.auth", traceOf.get(session) ?? "", undefined, { "smtp.auth.mechanism": auth.method })
    authenticate(auth, callback)
  },
  onMailFrom: (_address: unknown, session: SMTPServerSession, callback: (error?: Error) => void) => {
    const traceId = traceOf.get(session) ?? ""
    span("smtp.mail", traceId, undefined, { "smtp.reply.code": 250 })
    span("Limits.consumeMessage", traceId, undefined, {})
    callback()
  },
  onRcptTo: (_address: unknown, session: SMTPServerSession, callback: (error?: Error) => void) => {
    span("smtp.rcpt", traceOf.get(session) ?? "", undefined, { "smtp.reply.code": 250 })
    callback()
  },
  onData: (stream: Readable, session: SMTPServerSession, callback: DataCallback) => {
    const started = performance.now()
    parse(stream).then(({ parts, digest, size }) => {
      const traceId = traceOf.get(session) ?? ""
      const dataSpan = span("smtp.data", traceId, undefined, { "smtp.recipient_count": session.envelope.rcptTo.length })
      span("message.parse", traceId, dataSpan, { "message.size": size })
      const id = crypto.randomBytes(10).toString("hex")
      if (extras.has("checks")) {
        counters.received++
        for (const rcpt of session.envelope.rcptTo) {
          const key = crypto.createHash("sha256").update(`${parts.messageId}\0${digest}\0${rcpt.address}`).digest("hex")
          window.set(key, id)
          if (window.size > 100_000) window.delete(window.keys().next().value!)
        }
      }
      const deliverySpan = span("delivery.submit", traceId, dataSpan, { "delivery.recipients": session.envelope.rcptTo.length })
      const callStarted = performance.now()
      return post(bodyOf(session, parts)).then((status) => {
        span("http.client POST", traceId, deliverySpan, { "http.response.status_code": status })
        if (extras.has("checks")) {
          observe((performance.now() - callStarted) / 1000)
          observe((performance.now() - started) / 1000)
          counters.accepted++
        }
        if (status >= 200 && status < 300) {
          messagesOf.set(session, (messagesOf.get(session) ?? 0) + 1)
          log("message accepted", { session_id: session.id, gateway_id: id, size, recipients: session.envelope.rcptTo.length, upstream_ids: "up", trace_id: traceId })
          log("transaction ended", { session_id: session.id, reply: `250 2.0.0 Ok: queued as ${id}`, size, recipients: session.envelope.rcptTo.length, trace_id: traceId })
        }
        answer(callback, status)
      })
    }).catch(fail(callback))
  }
}

const server = new SMTPServer({
  ...(tlsMode
    ? { key: readFileSync(env("TLS_KEY_PATH")), cert: readFileSync(env("TLS_CERT_PATH")) }
    : { disabledCommands: ["STARTTLS", "AUTH"], authOptional: true }),
  size: 26_214_400,
  logger: false,
  disableReverseLookup: true,
  authMethods: ["PLAIN", "LOGIN"],
  ...(extras.size === 0
    ? { onAuth: (auth, _session, callback) => authenticate(auth, callback), onData: bareData }
    : withExtras)
})
server.on("error", () => {})
server.listen(Number(env("SINK_PORT")), "127.0.0.1")
process.on("SIGTERM", () => server.close(() => process.exit(0)))

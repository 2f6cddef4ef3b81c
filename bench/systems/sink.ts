/**
 * The benchmark's baseline: a bare smtp-server + mailparser sink that posts each message as JSON to the
 * HTTP upstream (keep-alive) and answers 250 once the upstream said 2xx: what the libraries cost with
 * nothing of the gateway around them. smtp-server's defaults are kept (including its 100 ms early-talker
 * wait). Not a product: one user, no policy, no limits beyond smtp-server's.
 * Env: SINK_PORT, SINK_MODE (plain | tls), UPSTREAM_URL, TLS_CERT_PATH, TLS_KEY_PATH, SINK_USER, SINK_PASS.
 */
import { readFileSync } from "node:fs"
import * as http from "node:http"
import { simpleParser } from "mailparser"
import { SMTPServer } from "smtp-server"

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
    req.end(body)
  })

const server = new SMTPServer({
  ...(tlsMode
    ? { key: readFileSync(env("TLS_KEY_PATH")), cert: readFileSync(env("TLS_CERT_PATH")) }
    : { disabledCommands: ["STARTTLS", "AUTH"], authOptional: true }),
  size: 26_214_400,
  logger: false,
  disableReverseLookup: true,
  authMethods: ["PLAIN", "LOGIN"],
  onAuth: (auth, _session, callback) =>
    auth.username === user && auth.password === pass
      ? callback(null, { user: auth.username })
      : callback(new Error("Authentication credentials invalid")),
  onData: (stream, session, callback) => {
    simpleParser(stream, {}, (error, mail) => {
      if (error) return callback(error)
      const body = JSON.stringify({
        envelope: { mail_from: session.envelope.mailFrom === false ? null : session.envelope.mailFrom.address, rcpt_to: session.envelope.rcptTo.map((r) => r.address) },
        message_id: mail.messageId ?? null,
        from: mail.from?.value ?? [],
        to: Array.isArray(mail.to) ? mail.to.flatMap((t) => t.value) : mail.to?.value ?? [],
        subject: mail.subject ?? null,
        text: mail.text ?? null,
        html: mail.html === false ? null : mail.html ?? null,
        headers: mail.headerLines.map((h) => ({ name: h.key, value: h.line })),
        attachments: mail.attachments.map((a) => ({
          filename: a.filename ?? null,
          content_type: a.contentType,
          size: a.size,
          content_base64: a.content.toString("base64")
        }))
      })
      post(body).then(
        (status) => status >= 200 && status < 300 ? callback(null, "Ok: queued") : callback(new Error(`upstream answered ${status}`)),
        (e: unknown) => callback(e instanceof Error ? e : new Error(String(e)))
      )
    })
  }
})
server.on("error", () => {})
server.listen(Number(env("SINK_PORT")), "127.0.0.1")
process.on("SIGTERM", () => server.close(() => process.exit(0)))

/**
 * Real SMTP clients against a gateway on loopback, for the end-to-end tests and scripts/record-corpus.ts:
 * nodemailer (STARTTLS required, the self-signed certificate accepted, AUTH PLAIN) and Python's smtplib
 * run as a child process. Test support only; the raw line client is SmtpClient.ts.
 */
import { execFile } from "node:child_process"
import { Effect, Predicate, Schema } from "effect"
import nodemailer from "nodemailer"

export type MailOptions = Parameters<ReturnType<typeof nodemailer.createTransport>["sendMail"]>[0]

/** Who a client logs in as. */
export interface Login {
  readonly username: string
  readonly password: string
}

/** nodemailer's options for the gateway at `port`; `name` is the EHLO name (nodemailer's own when absent). */
export const transportOptions = (port: number, login: Login, name?: string) => ({
  host: "127.0.0.1",
  port,
  secure: false,
  requireTLS: true,
  ...(name === undefined ? {} : { name }),
  tls: { rejectUnauthorized: false },
  auth: { user: login.username, pass: login.password, method: "PLAIN" }
})

/** A nodemailer transport, one connection per message. */
export const transport = (port: number, login: Login, name?: string) =>
  nodemailer.createTransport(transportOptions(port, login, name))

/** The reply that ended a nodemailer send: `info.response` when it succeeded, the refusing reply when not. */
export const replyOf = (send: () => Promise<{ readonly response: string }>): Effect.Effect<string> =>
  Effect.promise(() =>
    send().then(
      (info) => info.response,
      (error: unknown) =>
        Predicate.hasProperty(error, "response") && Predicate.isString(error.response)
          ? error.response
          : `no SMTP reply: ${String(error)}`
    )
  )

/** One connection (EHLO client.test, STARTTLS, AUTH PLAIN) for one message; the final reply. */
export const nodemailerSend = (port: number, mail: MailOptions, login: Login): Effect.Effect<string> =>
  replyOf(() => transport(port, login, "client.test").sendMail(mail))

/** A session that logs in and quits (nodemailer's verify: EHLO, STARTTLS, AUTH); true on 235. */
export const nodemailerLogin = (port: number, login: Login) =>
  Effect.promise(() => transport(port, login, "client.test").verify())

/** Runs a program (20 s at most) and gives its stdout; fails with its stderr. */
export const runProgram = (command: string, args: ReadonlyArray<string>) =>
  Effect.callback<string, Error>((resume) => {
    execFile(command, [...args], { timeout: 20_000 }, (error, stdout, stderr) =>
      resume(error ? Effect.fail(new Error(`${command} failed: ${stderr || error.message}`)) : Effect.succeed(stdout)))
  })

/** Runs one smtplib session step by step and prints every reply as JSON, so a refusal is a result, not a crash. */
const smtplibScript = `
import json, smtplib, ssl, sys
from email.message import EmailMessage
a = json.loads(sys.argv[1])
out = {}
def text(code, msg):
    return f"{code} {msg.decode() if isinstance(msg, bytes) else msg}"
with smtplib.SMTP("127.0.0.1", a["port"], local_hostname="client.test", timeout=10) as s:
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    s.user, s.password = a["user"], a["password"]
    mechanism = a["mechanism"]
    try:
        out["auth"] = text(*s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()), initial_response_ok=True))
    except smtplib.SMTPAuthenticationError as e:
        out["auth"] = text(e.smtp_code, e.smtp_error)
    if out["auth"].startswith("235") and "mail_from" in a:
        out["mail"] = text(*s.mail(a["mail_from"]))
        if out["mail"].startswith("250"):
            out["rcpt"] = [text(*s.rcpt(r)) for r in a["rcpt_to"]]
            m = EmailMessage()
            for name, value in a["headers"]:
                m[name] = value
            m.set_content(a["text"])
            try:
                out["data"] = text(*s.data(m.as_bytes(policy=m.policy.clone(linesep="\\r\\n"))))
            except smtplib.SMTPDataError as e:
                out["data"] = text(e.smtp_code, e.smtp_error)
print(json.dumps(out))
`

/** One smtplib session: STARTTLS, AUTH with an initial response, then (with `mail_from`) one message. */
export interface SmtplibSession {
  readonly port: number
  readonly user: string
  readonly password: string
  readonly mechanism: "PLAIN" | "LOGIN"
  readonly mail_from?: string
  readonly rcpt_to?: ReadonlyArray<string>
  readonly headers?: ReadonlyArray<readonly [string, string]>
  readonly text?: string
}

const SmtplibReplies = Schema.Struct({
  auth: Schema.String,
  mail: Schema.optionalKey(Schema.String),
  rcpt: Schema.optionalKey(Schema.Array(Schema.String)),
  data: Schema.optionalKey(Schema.String)
})
const decodeSmtplib = Schema.decodeUnknownSync(Schema.fromJsonString(SmtplibReplies))

/** The replies of each step that ran. */
export const smtplib = (session: SmtplibSession) =>
  runProgram("python3", ["-c", smtplibScript, JSON.stringify(session)]).pipe(
    Effect.flatMap((stdout) => Effect.sync(() => decodeSmtplib(stdout.trim())))
  )

/**
 * The clients above logged in as `login` unless told otherwise; `mechanism` is smtplib's AUTH
 * mechanism (nodemailer always uses PLAIN).
 */
export const clientsAs = (login: Login, mechanism: SmtplibSession["mechanism"] = "PLAIN") => ({
  nodemailerSend: (port: number, mail: MailOptions, password: string = login.password) =>
    nodemailerSend(port, mail, { username: login.username, password }),
  nodemailerLogin: (port: number) => nodemailerLogin(port, login),
  smtplib: (session: Omit<SmtplibSession, "user" | "password" | "mechanism"> & Partial<SmtplibSession>) =>
    smtplib({ user: login.username, password: login.password, mechanism, ...session })
})

export { closedPort } from "./Local.ts"

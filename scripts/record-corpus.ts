/**
 * Maintenance tool, not a test: records the corpus of test/fixtures/sessions/*.smtp by running real
 * clients (nodemailer, Python's smtplib, swaks, raw sockets) against the real gateway with the recorder
 * on (CAPTURE_DIR), then files each capture under its name with a header line saying what it proves.
 * Run: npx tsx scripts/record-corpus.ts [name...]  (needs python3 and swaks: apt-get install -y swaks)
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Duration, Effect, Schedule } from "effect"
import { replay } from "../src/capture/Replay.ts"
import { corpusEnv, sessionsDir } from "../test/capture/corpus.ts"
import { type MailOptions, runProgram, transport as clientTransport } from "../test/support/Clients.ts"
import { startTls } from "../test/support/converse.ts"
import { alice, startGateway, tempDir } from "../test/support/TestGateway.ts"

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64")

/** Bytes that stay the same from one recording to the next (fixtures should not churn). */
const fixedBytes = (length: number, seed: number) => {
  const out = Buffer.alloc(length)
  let x = seed
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    out[i] = x >> 16
  }
  return out
}

const transport = (port: number) => clientTransport(port, alice, "nodemailer.test")
const plainLogin = `
  C: AUTH PLAIN ${b64(`\0${alice.username}\0${alice.password}`)}
  S: 235 *
`

/** Sends one message from alice with nodemailer, with a fixed date (fixtures should not churn). */
const nodemailerSends = (mail: MailOptions) => (port: number) =>
  Effect.promise(() => transport(port).sendMail({ from: "Alice <alice@example.com>", date: new Date("2026-01-15T10:00:00Z"), ...mail }))

/** Replays `script` on a raw socket after STARTTLS (EHLO `helo`) and AUTH PLAIN as alice. */
const afterLogin = (helo: string, script: string) => (port: number) =>
  replay(`${startTls(helo)}${plainLogin}${script}`, { port })

interface Scenario {
  readonly name: string
  readonly client: string
  readonly proves: string
  readonly run: (port: number) => Effect.Effect<unknown, unknown>
}

const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "nodemailer-plain",
    client: "nodemailer 10 (STARTTLS, AUTH PLAIN)",
    proves: "a plain-text message from nodemailer is accepted after STARTTLS and AUTH PLAIN",
    run: nodemailerSends({
      to: "bob@example.net",
      subject: "Plain text from nodemailer",
      messageId: "<corpus-plain@example.com>",
      text: "Hello Bob,\n.a line that starts with a dot\nBye."
    })
  },
  {
    name: "nodemailer-html-attachments",
    client: "nodemailer 10 (STARTTLS, AUTH PLAIN)",
    proves: "an HTML message with text, two attachments and an inline image goes through whole",
    run: nodemailerSends({
      to: "Bob <bob@example.net>",
      cc: "carol@example.net",
      subject: "Report with attachments",
      messageId: "<corpus-html@example.com>",
      text: "Report attached.",
      html: `<p>Report attached.</p><img src="cid:logo@example.com">`,
      attachments: [
        { filename: "report.pdf", content: fixedBytes(6000, 1), contentType: "application/pdf" },
        { filename: "data.csv", content: "id,amount\r\n1,10.50\r\n", contentType: "text/csv" },
        { filename: "logo.png", content: fixedBytes(1500, 2), contentType: "image/png", cid: "logo@example.com" }
      ]
    })
  },
  {
    name: "smtplib-auth-login-initial-response",
    client: "Python smtplib (STARTTLS, AUTH LOGIN with an initial response)",
    proves: "AUTH LOGIN with the user name on the AUTH line, then the password after 334",
    run: (port) =>
      runProgram("python3", [
        "-c",
        `
import smtplib, ssl, sys
from email.message import EmailMessage
msg = EmailMessage()
msg["From"] = "alice@example.com"
msg["To"] = "erin@example.net"
msg["Subject"] = "From smtplib"
msg["Message-ID"] = "<corpus-smtplib@example.com>"
msg["Date"] = "Thu, 15 Jan 2026 10:00:00 +0000"
msg.set_content("Sent with Python's smtplib.")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="smtplib.test", timeout=10) as s:
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo()
    s.user, s.password = sys.argv[2], sys.argv[3]
    s.auth("LOGIN", s.auth_login, initial_response_ok=True)
    s.send_message(msg)
`,
        String(port),
        alice.username,
        alice.password
      ])
  },
  {
    name: "swaks-auth-plain-pipelining",
    client: "swaks 20201014 (STARTTLS, AUTH PLAIN, --pipeline)",
    proves: "a pipelining client: MAIL, RCPT and DATA in one write, answered in order",
    run: (port) =>
      runProgram("swaks", [
        "--server", "127.0.0.1", "--port", String(port), "--helo", "swaks.test", "--tls", "--pipeline",
        "--auth", "PLAIN", "--auth-user", alice.username, "--auth-password", alice.password,
        "--from", "alice@example.com", "--to", "bob@example.net,carol@example.net",
        "--header", "Subject: From swaks", "--header", "Message-Id: <corpus-swaks@example.com>",
        "--header", "Date: Thu, 15 Jan 2026 10:00:00 +0000", "--header", "X-Mailer: swaks",
        "--body", "Sent with swaks, pipelined."
      ])
  },
  {
    name: "dotnet-auth-login-without-initial-response",
    client: "raw socket, as .NET's System.Net.Mail.SmtpClient talks",
    proves: "AUTH LOGIN without an initial response: user name and password each after their 334",
    run: (port) =>
      replay(`${startTls("DOTNET-PC")}
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: ${b64(alice.username)}
        S: 334 UGFzc3dvcmQ6
        C: ${b64(alice.password)}
        S: 235 *
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: MIME-Version: 1.0
        C: From: alice@example.com
        C: To: bob@example.net
        C: Date: 15 Jan 2026 10:00:00 +0000
        C: Subject: From .NET
        C: Content-Type: text/plain; charset=us-ascii
        C: Content-Transfer-Encoding: quoted-printable
        C:
        C: Sent the way System.Net.Mail does it.
        C: .
        S: 250 *
        C: QUIT
        S: 221 *
      `, { port })
  },
  {
    name: "rset-between-transactions",
    client: "raw socket",
    proves: "RSET drops the transaction begun; the next MAIL starts afresh and two messages go in one session",
    run: afterLogin("rset.test", `
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<dropped@example.net>
        S: 250 *
        C: RSET
        S: 250 *
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<first@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: alice@example.com
        C: Subject: first after RSET
        C:
        C: one
        C: .
        S: 250 *
        C: RSET
        S: 250 *
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<second@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: alice@example.com
        C: Subject: second
        C:
        C: two
        C: .
        S: 250 *
        C: QUIT
        S: 221 *
      `)
  },
  {
    name: "disconnect-mid-data",
    client: "raw socket",
    proves: "a client that leaves in the middle of DATA: nothing is delivered and the gateway carries on",
    run: afterLogin("leaver.test", `
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: alice@example.com
        C: Subject: never finished
        C:
        C: the first lines of a body, and then the client is gone
        -- client closed
      `)
  },
  {
    name: "rejected-sender",
    client: "raw socket",
    proves: "MAIL FROM an address the account may not use is refused with 550 5.7.1, and the session goes on",
    run: afterLogin("mallory.test", `
        C: MAIL FROM:<ceo@bank.example>
        S: 550 5.7.1 *
        C: RCPT TO:<bob@example.net>
        S: 503 *
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: QUIT
        S: 221 *
      `)
  },
  {
    name: "oversize-message",
    client: "raw socket",
    proves: `a body over MAX_MESSAGE_SIZE (${corpusEnv.MAX_MESSAGE_SIZE}) is refused with 552 5.3.4 after the final dot; the body is kept as its digest`,
    run: afterLogin("big.test", `
        C: MAIL FROM:<alice@example.com>
        S: 250 *
        C: RCPT TO:<bob@example.net>
        S: 250 *
        C: DATA
        S: 354 *
        C: From: alice@example.com
        C: Subject: too big
        C:
        ${Array.from({ length: 800 }, (_, i) => `C: ${String(i).padStart(4, "0")} ${"x".repeat(70)}`).join("\n")}
        C: .
        S: 552 5.3.4 *
        C: QUIT
        S: 221 *
      `)
  }
]

/** Waits for the capture of the session just ended: a new `.smtp` file in `dir`. */
const nextCapture = (dir: string, seen: Set<string>) =>
  Effect.suspend(() => {
    const fresh = fs.readdirSync(dir).filter((f) => f.endsWith(".smtp") && !seen.has(f))
    return fresh.length === 1 ? Effect.succeed(fresh[0]!) : Effect.fail(new Error(`${fresh.length} new captures`))
  }).pipe(Effect.retry({ schedule: Schedule.spaced(Duration.millis(50)), times: 100 }))

const main = Effect.gen(function*() {
  const only = process.argv.slice(2)
  const captureDir = yield* tempDir("smtp-gateway-corpus-")
  const gateway = yield* startGateway({ ...corpusEnv, CAPTURE_DIR: captureDir })
  const seen = new Set<string>()
  fs.mkdirSync(sessionsDir, { recursive: true })
  for (const scenario of scenarios) {
    if (only.length > 0 && !only.includes(scenario.name)) continue
    yield* scenario.run(gateway.smtpPort)
    const file = yield* nextCapture(captureDir, seen)
    seen.add(file)
    const [title, ...rest] = fs.readFileSync(path.join(captureDir, file), "utf8").split("\n")
    const text = [
      title,
      `# proves: ${scenario.proves}`,
      `# client program: ${scenario.client}`,
      "# recorded by scripts/record-corpus.ts; replayed by test/capture/Replay.test.ts",
      ...rest
    ].join("\n")
    fs.writeFileSync(path.join(sessionsDir, `${scenario.name}.smtp`), text)
    process.stdout.write(`${scenario.name}.smtp  (${file})\n`)
  }
})

Effect.runPromise(Effect.scoped(main)).catch((error: unknown) => {
  process.stderr.write(`record-corpus: ${String(error)}\n`)
  process.exit(1)
})

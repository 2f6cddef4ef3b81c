/**
 * `smtp-gateway replay <file>... --target host:port [--insecure-tls] [--user U --password-stdin]`:
 * prints, per file, `ok` or the diff of the first difference; exits 0 when all replayed as captured,
 * 1 when one did not, 2 on a usage error. Argument handling only; the replay is Replay.ts.
 */
import { parseArgs } from "node:util"
import { Effect, Redacted } from "effect"
import { type ReplayCredentials, load, replay } from "./Replay.ts"

export const replayUsage = `Usage: smtp-gateway replay <file.smtp>... --target host:port [--insecure-tls] [--user U --password-stdin]
  Replays captured sessions against a gateway and prints a diff for the first reply that differs.
  --target host:port   the gateway's submission port (STARTTLS, or implicit TLS if the capture starts with "-- tls")
  --insecure-tls       do not verify the gateway's certificate (self-signed test and staging gateways)
  --user U             the account put in place of <redacted> AUTH payloads
  --password-stdin     read that account's password from the first line of stdin
  --timeout SECONDS    how long to wait for each reply (default 10)
`

export interface ReplayIo {
  readonly stdin: AsyncIterable<Buffer | string>
  readonly stdout: { write: (s: string) => unknown }
  readonly stderr: { write: (s: string) => unknown }
}

/** The first line of stdin, read only as far as its end (a pipe left open does not hold it up). */
export const readFirstLine = async (stdin: AsyncIterable<Buffer | string>): Promise<string> => {
  const chunks: Array<Buffer> = []
  for await (const chunk of stdin) {
    chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk)
    if (chunk.includes("\n")) break
  }
  return Buffer.concat(chunks).toString("utf8").split(/\r?\n/)[0] ?? ""
}

const parseTarget = (value: string): { host: string; port: number } | undefined => {
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(value)
  if (match === null) return undefined
  const port = Number(match[2])
  return port > 0 && port < 65536 ? { host: match[1]!, port } : undefined
}

/** Runs the command; resolves to the exit code. */
export const replayCommand = async (
  args: ReadonlyArray<string>,
  io: ReplayIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }
): Promise<number> => {
  const usage = (problem: string) => {
    io.stderr.write(`smtp-gateway replay: ${problem}\n\n${replayUsage}`)
    return 2
  }
  let parsed
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: {
        target: { type: "string" },
        "insecure-tls": { type: "boolean" },
        user: { type: "string" },
        "password-stdin": { type: "boolean" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" }
      }
    })
  } catch (error) {
    return usage(error instanceof Error ? error.message : String(error))
  }
  const { positionals: files, values } = parsed
  if (values.help === true) {
    io.stdout.write(replayUsage)
    return 0
  }
  if (files.length === 0) return usage("give at least one capture file")
  if (values.target === undefined) return usage("--target host:port is required")
  const target = parseTarget(values.target)
  if (target === undefined) return usage(`--target "${values.target}" is not host:port`)
  if ((values.user === undefined) !== (values["password-stdin"] !== true)) {
    return usage("--user and --password-stdin go together")
  }
  const timeoutSeconds = values.timeout === undefined ? 10 : Number(values.timeout)
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) return usage(`--timeout "${values.timeout}" is not a number of seconds`)
  let credentials: ReplayCredentials | undefined
  if (values.user !== undefined) {
    const password = await readFirstLine(io.stdin)
    if (password === "") return usage("the password read from stdin is empty")
    credentials = { username: values.user, password: Redacted.make(password) }
  }

  let failed = 0
  for (const file of files) {
    const exit = await Effect.runPromiseExit(
      Effect.flatMap(load(file), (transcript) =>
        replay(transcript, {
          host: target.host,
          port: target.port,
          verifyTls: values["insecure-tls"] !== true,
          timeout: `${timeoutSeconds} seconds`,
          credentials
        }))
    )
    if (exit._tag === "Success") {
      io.stdout.write(`ok    ${file}\n`)
      continue
    }
    failed++
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    const detail = error === undefined
      ? String(exit.cause)
      : error.error._tag === "ConversationMismatch"
      ? `line ${error.error.line} differs:\n${error.error.diff}`
      : error.error.message
    io.stdout.write(`FAIL  ${file}\n${detail.split("\n").map((l) => `      ${l}`).join("\n")}\n`)
  }
  io.stdout.write(`${files.length - failed} of ${files.length} replayed as captured\n`)
  return failed === 0 ? 0 : 1
}

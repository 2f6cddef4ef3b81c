/**
 * The `smtp-gateway` command line: `serve` (the default), `users add`, `--help`, `--version`.
 * Parses arguments and dispatches; the work lives in the modules it calls. Usage errors exit 2.
 */
import * as readline from "node:readline"
import { parseArgs } from "node:util"
import { Effect, Option, Redacted } from "effect"
import { addUser } from "./auth/UsersFile.ts"
import { readFirstLine, replayCommand } from "./capture/ReplayCli.ts"
import { loadGatewayConfig } from "./Config.ts"
import { serve } from "./main.ts"
import { version } from "./version.ts"

const usage = `smtp-gateway ${version}: an SMTP submission gateway in front of an email API

Usage:
  smtp-gateway [serve]                  run the gateway (configured by environment variables; see README)
  smtp-gateway users add <name> [--sender <address or @domain>]... [--api-key <key>]
                                        add or replace a user in the users file (AUTH_USERS_FILE);
                                        the password is read from stdin, or prompted for on a terminal
  smtp-gateway replay <file>... --target <host:port> [--insecure-tls] [--user <name> --password-stdin]
                                        replay captured sessions (.smtp) against a gateway and
                                        show where its replies differ (exit 1 on a difference)
  smtp-gateway --help                   show this help
  smtp-gateway --version                print the version
`

class UsageError extends Error {}

const fail = (message: string): never => {
  throw new UsageError(message)
}

/** Reads a password: the first line of stdin when it is not a terminal, else prompts twice without echo. */
const readPassword = async (): Promise<string> => {
  if (!process.stdin.isTTY) return readFirstLine(process.stdin)
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true })
      const write = (rl as unknown as { _writeToOutput: (s: string) => void })
      process.stderr.write(prompt)
      write._writeToOutput = () => {} // no echo
      rl.question("", (answer) => {
        rl.close()
        process.stderr.write("\n")
        resolve(answer)
      })
    })
  const first = await ask("Password: ")
  const second = await ask("Repeat password: ")
  if (first !== second) fail("the passwords do not match")
  return first
}

const usersAdd = async (args: ReadonlyArray<string>) => {
  const { positionals, values } = parseArgs({
    args: [...args],
    allowPositionals: true,
    strict: true,
    options: { sender: { type: "string", multiple: true }, "api-key": { type: "string" } }
  })
  if (positionals.length !== 1) fail("users add takes exactly one user name")
  const username = positionals[0]!
  const password = await readPassword()
  if (password === "") fail("the password is empty")
  const config = await Effect.runPromise(loadGatewayConfig)
  const result = await Effect.runPromise(
    addUser(config.auth.usersFile, {
      username,
      password: Redacted.make(password),
      senders: values.sender ?? [],
      apiKey: Option.map(Option.fromNullishOr(values["api-key"]), Redacted.make)
    })
  )
  process.stdout.write(`${result.replaced ? "Replaced" : "Added"} user "${username}" in ${config.auth.usersFile}\n`)
}

const main = async (argv: ReadonlyArray<string>) => {
  const [command, ...rest] = argv
  switch (command) {
    case undefined:
    case "serve":
      if (rest.length > 0) fail(`serve takes no arguments (got ${rest.join(" ")}); configure it with environment variables`)
      return serve()
    case "replay":
      process.exitCode = await replayCommand(rest)
      return
    case "users":
      if (rest[0] === "add") return usersAdd(rest.slice(1))
      return fail(rest[0] === undefined ? "users needs a subcommand: add" : `unknown users subcommand "${rest[0]}"`)
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(usage)
      return
    case "--version":
    case "-v":
      process.stdout.write(`${version}\n`)
      return
    default:
      return fail(`unknown command "${command}"`)
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError || (error instanceof TypeError && "code" in error &&
    String(error.code).startsWith("ERR_PARSE_ARGS"))) {
    process.stderr.write(`smtp-gateway: ${error.message}\n\n${usage}`)
    process.exit(2)
  }
  process.stderr.write(`smtp-gateway: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})

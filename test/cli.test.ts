import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { readUsersFile, verifyPassword } from "../src/auth/UsersFile.ts"
import { tempDir } from "./support/TestGateway.ts"

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs the real command line (TypeScript sources through tsx). */
const cli = (
  args: ReadonlyArray<string>,
  options: { env?: Record<string, string>; stdin?: string; keepStdinOpen?: boolean } = {}
) =>
  Effect.callback<Run>((resume) => {
    const child = execFile(
      process.execPath,
      ["--import", "tsx", "src/cli.ts", ...args],
      { env: { PATH: process.env.PATH ?? "", ...options.env }, timeout: 20_000 },
      (error, stdout, stderr) => resume(Effect.succeed({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }))
    )
    if (options.keepStdinOpen === true) child.stdin?.write(options.stdin ?? "")
    else child.stdin?.end(options.stdin ?? "")
    return Effect.sync(() => void child.kill())
  })

describe("smtp-gateway command line", () => {
  it.live("prints its usage with --help", () =>
    Effect.gen(function*() {
      const run = yield* cli(["--help"])
      assert.strictEqual(run.code, 0)
      assert.include(run.stdout, "smtp-gateway users add <name>")
    }))

  it.live("refuses an unknown command with exit code 2", () =>
    Effect.gen(function*() {
      const run = yield* cli(["frobnicate"])
      assert.strictEqual(run.code, 2)
      assert.include(run.stderr, "smtp-gateway: unknown command \"frobnicate\"")
      assert.include(run.stderr, "Usage:")
    }))

  it.live("refuses an unknown flag with exit code 2", () =>
    Effect.gen(function*() {
      const run = yield* cli(["users", "add", "bob", "--colour", "blue"])
      assert.strictEqual(run.code, 2)
      assert.include(run.stderr, "--colour")
    }))

  it.live("adds a user whose password comes from stdin", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("smtp-gateway-cli-")
      const usersFile = path.join(dir, "users.json")
      const run = yield* cli(["users", "add", "bob", "--sender", "bob@example.com", "--sender", "@example.net"], {
        env: { AUTH_USERS_FILE: usersFile },
        stdin: "correct horse battery staple\n"
      })
      assert.strictEqual(run.code, 0, run.stderr)
      assert.include(run.stdout, `user "bob"`)
      assert.strictEqual(fs.statSync(usersFile).mode & 0o777, 0o600)
      const { users } = yield* readUsersFile(usersFile)
      const bob = users.find((u) => u.username === "bob")!
      assert.deepStrictEqual(bob.senders, ["bob@example.com", "@example.net"])
      assert.isTrue(yield* verifyPassword("correct horse battery staple", bob.password))
      assert.notInclude(fs.readFileSync(usersFile, "utf8"), "correct horse")
    }))

  it.live("takes the password's line from a pipe that stays open", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir("smtp-gateway-cli-")
      const run = yield* cli(["users", "add", "carol", "--sender", "@example.com"], {
        env: { AUTH_USERS_FILE: path.join(dir, "users.json") },
        stdin: "open pipe password\n",
        keepStdinOpen: true
      })
      assert.strictEqual(run.code, 0, run.stderr)
      const { users } = yield* readUsersFile(path.join(dir, "users.json"))
      assert.isTrue(yield* verifyPassword("open pipe password", users.find((u) => u.username === "carol")!.password))
    }))

  it.live("stops serve on bad configuration with one line per problem and exit code 1", () =>
    Effect.gen(function*() {
      const run = yield* cli(["serve"], { env: { SMTP_PORT: "99999", LOG_FORMAT: "yaml" } })
      assert.strictEqual(run.code, 1)
      assert.include(run.stderr, "SMTP_PORT: \"99999\" is not a port number from 0 to 65535")
      assert.include(run.stderr, "LOG_FORMAT: \"yaml\" is not one of json, pretty")
      assert.notInclude(run.stderr, "    at ", "no stack trace for a configuration problem")
    }))
})

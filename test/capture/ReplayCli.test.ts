import * as fs from "node:fs"
import * as path from "node:path"
import { Readable } from "node:stream"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { replayCommand } from "../../src/capture/ReplayCli.ts"
import { alice, startGateway, tempDir } from "../support/TestGateway.ts"
import { corpusEnv, sessionsDir } from "./corpus.ts"

/** Runs the command with `stdin` as its input; returns the exit code and what it printed. */
const run = (args: ReadonlyArray<string>, stdin = "") =>
  Effect.promise(async () => {
    let stdout = ""
    let stderr = ""
    const code = await replayCommand(args, {
      stdin: Readable.from([Buffer.from(stdin)]),
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) }
    })
    return { code, stdout, stderr }
  })

describe("smtp-gateway replay", () => {
  it.live("replays capture files against a gateway: exit 0, or the diff and exit 1; verifies TLS unless told not to", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway(corpusEnv)
      const dir = yield* tempDir("smtp-gateway-replay-cli-")
      const good = path.join(sessionsDir, "rejected-sender.smtp")
      const changed = path.join(dir, "changed.smtp")
      fs.writeFileSync(changed, fs.readFileSync(good, "utf8").replace("S: 250 2.1.0 Sender ok", "S: 250 2.1.0 Sender okay"))
      const target = ["--target", `127.0.0.1:${gateway.smtpPort}`, "--insecure-tls", "--user", alice.username, "--password-stdin"]

      const green = yield* run([good, ...target], `${alice.password}\n`)
      assert.strictEqual(green.code, 0, green.stdout + green.stderr)
      assert.include(green.stdout, `ok    ${good}`)

      const red = yield* run([good, changed, ...target], `${alice.password}\n`)
      assert.strictEqual(red.code, 1)
      assert.include(red.stdout, `FAIL  ${changed}`)
      assert.include(red.stdout, "      - S: 250 2.1.0 Sender okay\n      + S: 250 2.1.0 Sender ok\n")
      assert.include(red.stdout, "1 of 2 replayed as captured")

      // without --insecure-tls the gateway's certificate must verify (this one is self-signed)
      const verified = yield* run([good, ...target.filter((a) => a !== "--insecure-tls")], `${alice.password}\n`)
      assert.strictEqual(verified.code, 1)
      assert.match(verified.stdout, /TLS handshake failed: .*(self-signed|certificate)/i)
    }))

  it.effect("explains a usage error and exits 2", () =>
    Effect.gen(function*() {
      const noTarget = yield* run(["x.smtp"])
      assert.strictEqual(noTarget.code, 2)
      assert.include(noTarget.stderr, "--target host:port is required")
      const lonelyUser = yield* run(["x.smtp", "--target", "localhost:587", "--user", "alice"])
      assert.strictEqual(lonelyUser.code, 2)
      assert.include(lonelyUser.stderr, "--user and --password-stdin go together")
    }))
})

/**
 * The `outbox` upstream: writes each message as `<id>.eml` (the message as it travels on) and
 * `<id>.json` (the canonical message) in OUTBOX_DIR, each atomically (temp file, fsync, rename, fsync
 * of the directory), the .json last: a reader that sees `<id>.json` also sees `<id>.eml`.
 * It does not send anything anywhere, nor clean the directory up.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Cause, Effect, Layer, Schema } from "effect"
import { ConfigInvalid, GatewayConfig } from "../Config.ts"
import type { CanonicalMessage } from "../domain/Message.ts"
import { jsonBody } from "./JsonBody.ts"
import { type Outbound, Upstream, UpstreamError } from "./Upstream.ts"

/** A gateway id is a file name here: no separators, no leading dot. */
const safeId = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/
const newline = Buffer.from("\n")

/** The canonical message laid out for people (as `JSON.stringify(message, null, 2)`), made as it is written. */
function* jsonFile(message: CanonicalMessage): Generator<Uint8Array> {
  yield* jsonBody(message, 2).chunks()
  yield newline
}

class OutboxIoError extends Schema.TaggedError<OutboxIoError>()("OutboxIoError", {
  operation: Schema.String,
  cause: Schema.Defect()
}) {}

const io = <A>(operation: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new OutboxIoError({ operation, cause }) })

/** fsync of a directory makes the renames inside it durable. */
const syncDirectory = (dir: string) =>
  io("fsync directory", async () => {
    const handle = await fs.open(dir, "r")
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  })

/**
 * Writes `chunks` to `<dir>/<name>` through a temp file in the same directory, one chunk at a time (a
 * message's JSON is never one string); the rename is atomic.
 */
const writeAtomically = (dir: string, name: string, chunks: Iterable<Uint8Array>) => {
  const temp = path.join(dir, `.${name}.${crypto.randomBytes(6).toString("hex")}.tmp`)
  return Effect.gen(function*() {
    yield* io("write", async () => {
      const handle = await fs.open(temp, "wx", 0o640)
      try {
        for (const chunk of chunks) await handle.write(chunk)
        await handle.sync()
      } finally {
        await handle.close()
      }
    })
    yield* io("rename", () => fs.rename(temp, path.join(dir, name)))
    yield* syncDirectory(dir)
  }).pipe(
    Effect.onError(() => Effect.promise(() => fs.rm(temp, { force: true }).catch(() => undefined)))
  )
}

const make = Effect.gen(function*() {
  const dir = (yield* GatewayConfig).upstream.outboxDir
  yield* io("create directory", () => fs.mkdir(dir, { recursive: true })).pipe(
    Effect.mapError((e) =>
      new ConfigInvalid({
        problems: [`OUTBOX_DIR: cannot create "${dir}" (${describe(e.cause)}); set a writable directory`]
      })
    )
  )

  const submit = Effect.fnUntraced(
    function*(outbound: Outbound) {
      if (!safeId.test(outbound.id)) return yield* Effect.die(new Error(`unsafe gateway id for a file name: ${outbound.id}`))
      yield* io("create directory", () => fs.mkdir(dir, { recursive: true }))
      yield* writeAtomically(dir, `${outbound.id}.eml`, outbound.raw)
      yield* writeAtomically(dir, `${outbound.id}.json`, jsonFile(outbound.message))
      yield* Effect.logDebug("message written to the outbox").pipe(Effect.annotateLogs({ gateway_id: outbound.id }))
      return { upstreamId: outbound.id }
    },
    Effect.catchTag("OutboxIoError", (e) =>
      Effect.logError("outbox write failed", Cause.fail(e)).pipe(
        Effect.annotateLogs({ operation: e.operation, outbox_dir: dir }),
        Effect.andThen(new UpstreamError({ kind: "Temporary", detail: "outbox write failed" }))
      ))
  )

  return Upstream.of({ name: "outbox", perRecipient: false, submit })
})

const describe = (cause: unknown): string =>
  cause instanceof Error ? ("code" in cause && typeof cause.code === "string" ? cause.code : cause.message) : String(cause)

/** Needs `config.upstream.outboxDir`; fails at startup when the directory cannot be created. */
export const layer: Layer.Layer<Upstream, ConfigInvalid, GatewayConfig> = Layer.effect(Upstream, make)

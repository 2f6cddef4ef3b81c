import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { idempotencyKey } from "../../src/delivery/Delivery.ts"
import * as OutboxUpstream from "../../src/delivery/OutboxUpstream.ts"
import { type Outbound, Upstream } from "../../src/delivery/Upstream.ts"
import { CanonicalMessage } from "../../src/domain/Message.ts"
import { configLayer } from "../support/TestConfig.ts"
import { request } from "./fixtures.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "outbox-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const outbound = (id = "0ABCDEF12XYZ"): Outbound => {
  const r = request(["bob@example.net", "carol@example.org"], { id })
  return { ...r, idempotencyKey: idempotencyKey(r, r.recipients) }
}

const upstreamAt = (dir: string) =>
  Effect.provide(
    Upstream.use(Effect.succeed),
    OutboxUpstream.layer.pipe(Layer.provide(configLayer({ OUTBOX_DIR: dir })))
  )

describe("OutboxUpstream", () => {
  it.effect("writes the message as <id>.eml and the canonical message as <id>.json, leaving no temp files", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "nested", "outbox")
      const upstream = yield* upstreamAt(dir)
      const message = outbound()
      const accepted = yield* upstream.submit(message)

      assert.deepStrictEqual(accepted, { upstreamId: "0ABCDEF12XYZ" })
      assert.deepStrictEqual(fs.readdirSync(dir).sort(), ["0ABCDEF12XYZ.eml", "0ABCDEF12XYZ.json"])
      assert.deepStrictEqual(new Uint8Array(fs.readFileSync(path.join(dir, "0ABCDEF12XYZ.eml"))), new Uint8Array(Buffer.concat(message.raw)))
      const text = fs.readFileSync(path.join(dir, "0ABCDEF12XYZ.json"), "utf8")
      assert.match(text, /^\{\n  "id": "0ABCDEF12XYZ",/)
      const decoded = Schema.decodeUnknownSync(Schema.fromJsonString(CanonicalMessage))(text)
      assert.deepStrictEqual(decoded, message.message)
      assert.strictEqual(upstream.name, "outbox")
      assert.isFalse(upstream.perRecipient)
    }))

  it.effect("writes attachments into <id>.json as base64, laid out as JSON.stringify(message, null, 2)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const upstream = yield* upstreamAt(dir)
      const base = outbound("WITHFILES")
      const content = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff)
      const attachment = { filename: "a.bin", content_type: "application/octet-stream", size: content.byteLength, content_id: null, disposition: "attachment" as const, content_base64: content }
      const message = { ...base, message: { ...base.message, attachments: [attachment] } }
      yield* upstream.submit(message)
      const text = fs.readFileSync(path.join(dir, "WITHFILES.json"), "utf8")
      assert.strictEqual(text, JSON.stringify(Schema.encodeSync(CanonicalMessage)(message.message), null, 2) + "\n")
      assert.include(text, `"content_base64": "${Buffer.from(content).toString("base64")}"`)
    }))

  it.effect("writes <id>.eml from its pieces, the body straight from the shared memory it arrived in", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const upstream = yield* upstreamAt(dir)
      const body = new Uint8Array(new SharedArrayBuffer(1_000_000)).map((_, i) => 65 + (i % 26))
      const head = new TextEncoder().encode("Received: from client\r\nSubject: big\r\n")
      yield* upstream.submit({ ...outbound("PIECES"), raw: [head, body.subarray(0, 999_000)] })
      const written = fs.readFileSync(path.join(dir, "PIECES.eml"))
      assert.isTrue(written.equals(Buffer.concat([head, body.subarray(0, 999_000)])))
    }))

  it.effect("keeps earlier messages when it writes the next one", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const upstream = yield* upstreamAt(dir)
      yield* upstream.submit(outbound("FIRST"))
      yield* upstream.submit(outbound("SECOND"))
      assert.deepStrictEqual(fs.readdirSync(dir).sort(), ["FIRST.eml", "FIRST.json", "SECOND.eml", "SECOND.json"])
    }))

  it.effect("fails temporarily, so the client retries, when the outbox cannot be written", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "outbox")
      const upstream = yield* upstreamAt(dir)
      // the directory turns into a file under the gateway's feet: every write now fails
      fs.rmSync(dir, { recursive: true })
      fs.writeFileSync(dir, "not a directory")
      const error = yield* Effect.flip(upstream.submit(outbound()))
      assert.strictEqual(error.kind, "Temporary")
      assert.strictEqual(error.detail, "outbox write failed")
    }))

  it.effect("refuses to start when OUTBOX_DIR cannot be created", () =>
    Effect.gen(function*() {
      const file = path.join(yield* tempDir, "a-file")
      fs.writeFileSync(file, "")
      const error = yield* Effect.flip(upstreamAt(path.join(file, "outbox")))
      assert.strictEqual(error._tag, "ConfigInvalid")
      assert.match(error.message, /OUTBOX_DIR: cannot create .* set a writable directory/)
    }))
})

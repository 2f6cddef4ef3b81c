import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { CredentialStore } from "../../src/auth/CredentialStore.ts"
import { layerHttpCredentialStoreWith } from "../../src/auth/HttpAuth.ts"
import { Credentials } from "../../src/domain/Principal.ts"

interface Seen {
  readonly contentType: string
  readonly body: unknown
}

type Answer = { readonly status: number; readonly body?: unknown } | "hang" | "drop"

/** A generic auth API on loopback that answers each call with the next answer (the last one repeats). */
const authApi = (...answers: ReadonlyArray<Answer>) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const seen: Array<Seen> = []
      const server = http.createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (c: Buffer) => chunks.push(c))
        req.on("end", () => {
          seen.push({ contentType: String(req.headers["content-type"]), body: JSON.parse(Buffer.concat(chunks).toString()) })
          const answer = answers[Math.min(seen.length, answers.length) - 1] ?? { status: 500 }
          if (answer === "hang") return
          if (answer === "drop") return req.socket.destroy()
          res.writeHead(answer.status, { "content-type": "application/json" })
          res.end(answer.body === undefined ? "" : JSON.stringify(answer.body))
        })
      })
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const { port } = server.address() as AddressInfo
      return { url: new URL(`http://127.0.0.1:${port}/verify`), seen, server }
    }),
    ({ server }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        })
      )
  )

const alice = new Credentials({
  username: "alice",
  password: Redacted.make("s3cret"),
  authzid: Option.none(),
  method: "PLAIN"
})

/** Verifies alice against an auth API that gives `answers`; returns the outcome and what the API saw. */
const verifyWith = (...answers: ReadonlyArray<Answer>) =>
  Effect.gen(function*() {
    const api = yield* authApi(...answers)
    const store = layerHttpCredentialStoreWith({ url: api.url, timeout: "300 millis", retries: 2, backoff: "10 millis" }).pipe(
      Layer.provide(NodeHttpClient.layerNodeHttpOptions({ keepAlive: true }))
    )
    const result = yield* CredentialStore.use((s) => s.verify(alice)).pipe(Effect.result, Effect.provide(store))
    return { result, seen: api.seen }
  })

describe("HttpAuth", () => {
  it.live("posts the username and password as JSON and turns the answer into a principal", () =>
    Effect.gen(function*() {
      const before = Date.now()
      const { result, seen } = yield* verifyWith({
        status: 200,
        body: { api_key: "key-1", expires_in: 600, senders: ["alice@example.com", "@example.org"] }
      })
      assert.deepStrictEqual(seen, [{ contentType: "application/json", body: { username: "alice", password: "s3cret" } }])
      assert.isTrue(result._tag === "Success")
      if (result._tag !== "Success") return
      const principal = result.success
      assert.strictEqual(principal.username, "alice")
      assert.strictEqual(principal.backend, "http")
      assert.deepStrictEqual(principal.senders, Option.some(["alice@example.com", "@example.org"]))
      assert.deepStrictEqual(Option.map(principal.apiKey, Redacted.value), Option.some("key-1"))
      assert.isTrue(Option.isNone(principal.account))
      const expiresAt = Option.getOrThrow(principal.expiresAt)
      assert.isTrue(expiresAt >= before + 600_000 && expiresAt <= Date.now() + 600_000)
    }))

  it.live("leaves senders to the upstream and sets no expiry when the API says nothing of them", () =>
    Effect.gen(function*() {
      const { result } = yield* verifyWith({ status: 200, body: { api_key: "key-2" } })
      assert.isTrue(result._tag === "Success" && Option.isNone(result.success.senders) && Option.isNone(result.success.expiresAt))
    }))

  for (const status of [401, 403]) {
    it.live(`refuses the credentials on ${status}, without retrying`, () =>
      Effect.gen(function*() {
        const { result, seen } = yield* verifyWith({ status, body: { error: "nope" } })
        assert.isTrue(result._tag === "Failure" && result.failure.reason._tag === "InvalidCredentials")
        assert.isTrue(result._tag === "Failure" && result.failure.reply.code === 535)
        assert.strictEqual(seen.length, 1)
      }))
  }

  for (const status of [429, 500, 503]) {
    it.live(`reports ${status} as BackendUnavailable after two retries`, () =>
      Effect.gen(function*() {
        const { result, seen } = yield* verifyWith({ status })
        assert.isTrue(result._tag === "Failure" && result.failure.reason._tag === "BackendUnavailable")
        assert.isTrue(result._tag === "Failure" && result.failure.reply.code === 454)
        assert.strictEqual(seen.length, 3)
      }))
  }

  it.live("reports a timeout and a dropped connection as BackendUnavailable", () =>
    Effect.gen(function*() {
      for (const answer of ["hang", "drop"] as const) {
        const { result, seen } = yield* verifyWith(answer)
        assert.isTrue(result._tag === "Failure" && result.failure.reason._tag === "BackendUnavailable", answer)
        assert.strictEqual(seen.length, 3, answer)
      }
    }))

  it.live("reports an unreadable 200 as BackendUnavailable", () =>
    Effect.gen(function*() {
      for (const body of [{ key: "x" }, { api_key: "" }, { api_key: "k", senders: ["not an address"] }]) {
        const { result } = yield* verifyWith({ status: 200, body })
        assert.isTrue(result._tag === "Failure" && result.failure.reason._tag === "BackendUnavailable", JSON.stringify(body))
      }
    }))

  it.live("succeeds when a temporary failure clears within the retries", () =>
    Effect.gen(function*() {
      const { result, seen } = yield* verifyWith({ status: 502 }, "drop", { status: 200, body: { api_key: "key-3" } })
      assert.isTrue(result._tag === "Success")
      assert.strictEqual(seen.length, 3)
    }))

  it.live("reports an auth API that is not listening as BackendUnavailable", () =>
    Effect.gen(function*() {
      const api = yield* Effect.scoped(authApi({ status: 200 }))
      const store = layerHttpCredentialStoreWith({ url: api.url, timeout: "300 millis", backoff: "10 millis" }).pipe(
        Layer.provide(NodeHttpClient.layerNodeHttpOptions({ keepAlive: true }))
      )
      const error = yield* CredentialStore.use((s) => s.verify(alice)).pipe(Effect.flip, Effect.provide(store))
      assert.strictEqual(error.reason._tag, "BackendUnavailable")
    }))
})

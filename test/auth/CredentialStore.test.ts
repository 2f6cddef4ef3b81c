import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { CredentialStore, makeFileStore } from "../../src/auth/CredentialStore.ts"
import { addUser, hashPassword, writeUsersFile } from "../../src/auth/UsersFile.ts"
import { Credentials } from "../../src/domain/Principal.ts"
import { configLayer } from "../support/TestConfig.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-store-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const credentials = (username: string, password: string) =>
  new Credentials({ username, password: Redacted.make(password), authzid: Option.none(), method: "PLAIN" })

const reasonOf = (store: CredentialStore["Service"], username: string, password: string) =>
  Effect.map(Effect.flip(store.verify(credentials(username, password))), (error) => error.reason._tag)

/** A users file with alice (senders, api key) and bob (no key). */
const usersFile = Effect.gen(function*() {
  const dir = yield* tempDir
  const file = path.join(dir, "users.json")
  yield* writeUsersFile(file, {
    users: [
      { username: "alice", password: yield* hashPassword("alice-pw"), senders: ["alice@example.com", "@example.org"], api_key: "key-a" },
      { username: "bob", password: yield* hashPassword("bob-pw"), senders: ["bob@example.com"] }
    ]
  })
  return file
})

describe("CredentialStore", () => {
  describe("file backend", () => {
    it.effect("turns a user of the file into a principal with its senders and API key", () =>
      Effect.gen(function*() {
        const store = yield* makeFileStore(yield* usersFile)
        const alice = yield* store.verify(credentials("alice", "alice-pw"))
        assert.strictEqual(alice.username, "alice")
        assert.deepStrictEqual(alice.senders, Option.some(["alice@example.com", "@example.org"]))
        assert.strictEqual(Redacted.value(Option.getOrThrow(alice.apiKey)), "key-a")
        assert.strictEqual(alice.backend, "file")
        assert.isTrue(Option.isNone(alice.account))
        assert.isTrue(Option.isNone(alice.expiresAt))
        const bob = yield* store.verify(credentials("bob", "bob-pw"))
        assert.isTrue(Option.isNone(bob.apiKey))
      }))

    it.effect("refuses a wrong password and an unknown user alike", () =>
      Effect.gen(function*() {
        const store = yield* makeFileStore(yield* usersFile)
        assert.strictEqual(yield* reasonOf(store, "alice", "bob-pw"), "InvalidCredentials")
        assert.strictEqual(yield* reasonOf(store, "mallory", "alice-pw"), "InvalidCredentials")
        assert.strictEqual(yield* reasonOf(store, "Alice", "alice-pw"), "InvalidCredentials")
      }))

    it.effect("answers BackendUnavailable while the file is missing or invalid", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "users.json")
        const missing = yield* makeFileStore(file)
        const error = yield* Effect.flip(missing.verify(credentials("alice", "alice-pw")))
        assert.strictEqual(error.reason._tag, "BackendUnavailable")
        assert.include(error.reason._tag === "BackendUnavailable" ? error.reason.detail : "", `Users file ${file}: does not exist`)

        fs.writeFileSync(file, `{"users": [{"username": "x", "password": "plain", "senders": []}]}`)
        const invalid = yield* makeFileStore(file)
        assert.strictEqual(yield* reasonOf(invalid, "x", "plain"), "BackendUnavailable")
      }))

    it.effect("sees users added to the file, looking at most once a second", () =>
      Effect.gen(function*() {
        const file = yield* usersFile
        const store = yield* makeFileStore(file)
        yield* store.verify(credentials("alice", "alice-pw"))

        yield* addUser(file, { username: "carol", password: Redacted.make("carol-pw"), senders: ["@example.com"] })
        assert.strictEqual(yield* reasonOf(store, "carol", "carol-pw"), "InvalidCredentials")
        yield* TestClock.adjust("1 second")
        const carol = yield* store.verify(credentials("carol", "carol-pw"))
        assert.strictEqual(carol.username, "carol")
        assert.deepStrictEqual(carol.senders, Option.some(["@example.com"]))

        // a replaced password takes effect too, and the old one stops working
        yield* addUser(file, { username: "alice", password: Redacted.make("new-pw"), senders: ["@example.com"] })
        yield* TestClock.adjust("1 second")
        assert.strictEqual(yield* reasonOf(store, "alice", "alice-pw"), "InvalidCredentials")
        assert.strictEqual((yield* store.verify(credentials("alice", "new-pw"))).username, "alice")
      }))

    it.effect("recovers once a broken file is fixed", () =>
      Effect.gen(function*() {
        const file = yield* usersFile
        const good = fs.readFileSync(file, "utf8")
        const store = yield* makeFileStore(file)
        fs.writeFileSync(file, "{ broken")
        yield* TestClock.adjust("1 second")
        assert.strictEqual(yield* reasonOf(store, "alice", "alice-pw"), "BackendUnavailable")
        fs.writeFileSync(file, good)
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* store.verify(credentials("alice", "alice-pw"))).username, "alice")
      }))

    it.effect("reads the path from AUTH_USERS_FILE through layerFile", () =>
      Effect.gen(function*() {
        const file = yield* usersFile
        const config = configLayer({ AUTH_USERS_FILE: file })
        const principal = yield* CredentialStore.use((store) => store.verify(credentials("bob", "bob-pw"))).pipe(
          Effect.provide(CredentialStore.layerFile.pipe(Layer.provide(config)))
        )
        assert.strictEqual(principal.username, "bob")
      }))
  })

  describe("memory backend", () => {
    const layer = CredentialStore.layerMemory([
      { username: "alice", password: "alice-pw", senders: ["@example.com"], apiKey: "key-a" },
      { username: "bob", password: "bob-pw", senders: [] }
    ])

    it.effect("verifies its users and refuses others", () =>
      Effect.gen(function*() {
        const store = yield* CredentialStore
        const alice = yield* store.verify(credentials("alice", "alice-pw"))
        assert.deepStrictEqual(alice.senders, Option.some(["@example.com"]))
        assert.strictEqual(Redacted.value(Option.getOrThrow(alice.apiKey)), "key-a")
        assert.strictEqual(alice.backend, "file")
        assert.strictEqual(yield* reasonOf(store, "alice", "bob-pw"), "InvalidCredentials")
        assert.strictEqual(yield* reasonOf(store, "carol", "x"), "InvalidCredentials")
      }).pipe(Effect.provide(layer)))
  })
})

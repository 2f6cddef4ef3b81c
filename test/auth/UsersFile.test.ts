import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import {
  addUser as addUserWith,
  ensureUsersFile,
  generatePassword,
  hashPassword,
  parseUsersFile,
  readUsersFile,
  verifyPassword,
  writeUsersFile
} from "../../src/auth/UsersFile.ts"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-users-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** addUser with plain test values. */
const addUser = (
  file: string,
  user: { username: string; password: string; senders: ReadonlyArray<string>; apiKey?: string }
) =>
  addUserWith(file, {
    username: user.username,
    password: Redacted.make(user.password),
    senders: user.senders,
    apiKey: Option.map(Option.fromUndefinedOr(user.apiKey), Redacted.make)
  })

const modeOf = (file: string) => fs.statSync(file).mode & 0o777

const problemOf = (text: string) =>
  Effect.map(Effect.flip(parseUsersFile("/srv/users.json", text)), (error) => error.message)

describe("UsersFile", () => {
  describe("password hashes", () => {
    it.effect("hashes in the scrypt$N$r$p$salt$hash format and verifies the same password", () =>
      Effect.gen(function*() {
        const hash = yield* hashPassword("correct horse")
        const parts = hash.split("$")
        assert.deepStrictEqual(parts.slice(0, 4), ["scrypt", "16384", "8", "1"])
        assert.strictEqual(Buffer.from(parts[4]!, "base64").length, 16)
        assert.strictEqual(Buffer.from(parts[5]!, "base64").length, 32)
        assert.isTrue(yield* verifyPassword("correct horse", hash))
      }))

    it.effect("rejects a wrong password", () =>
      Effect.gen(function*() {
        const hash = yield* hashPassword("correct horse")
        assert.isFalse(yield* verifyPassword("correct horsf", hash))
        assert.isFalse(yield* verifyPassword("", hash))
      }))

    it.effect("salts every hash differently", () =>
      Effect.gen(function*() {
        assert.notStrictEqual(yield* hashPassword("same"), yield* hashPassword("same"))
      }))

    it.effect("treats a malformed hash as a mismatch", () =>
      Effect.gen(function*() {
        assert.isFalse(yield* verifyPassword("secret", "secret"))
      }))

    it("generates 24-character base64url passwords", () => {
      const password = generatePassword()
      assert.match(password, /^[A-Za-z0-9_-]{24}$/)
      assert.notStrictEqual(password, generatePassword())
    })
  })

  describe("parsing", () => {
    it.effect("accepts a file with senders and an optional api_key", () =>
      Effect.gen(function*() {
        const hash = yield* hashPassword("pw")
        const content = yield* parseUsersFile(
          "/srv/users.json",
          JSON.stringify({
            users: [
              { username: "alice", password: hash, senders: ["alice@example.com", "@example.org"], api_key: "k-1" },
              { username: "bob", password: hash, senders: [] }
            ]
          })
        )
        assert.deepStrictEqual(content.users.map((u) => [u.username, u.api_key]), [["alice", "k-1"], ["bob", undefined]])
        assert.deepStrictEqual(content.users[0]!.senders, ["alice@example.com", "@example.org"])
      }))

    it.effect("names the file and the position of a JSON syntax error, without quoting the file", () =>
      Effect.gen(function*() {
        const message = yield* problemOf(`{"users": [{"username": "a", "api_key": "sekrit" x}]}`)
        assert.strictEqual(message, "Users file /srv/users.json: not valid JSON (syntax error at line 1, column 50)")
        const other = yield* problemOf(`{"users": "sekrit" }}`)
        assert.include(other, "not valid JSON")
        assert.notInclude(other, "sekrit")
        assert.include(yield* problemOf(`{"users": [`), "not valid JSON (it ends too early)")
      }))

    it.effect("names each bad field by its path", () =>
      Effect.gen(function*() {
        const hash = yield* hashPassword("pw")
        const message = yield* problemOf(JSON.stringify({
          users: [
            { username: "ok", password: hash, senders: ["alice@example.com"] },
            { username: "has space", password: "plaintext", senders: ["not-an-address"], api_key: 7 }
          ]
        }))
        assert.include(message, "Users file /srv/users.json: ")
        assert.include(message, "users[1].username: must not contain spaces or control characters")
        assert.include(message, "users[1].password: must be scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>")
        assert.include(message, "users[1].senders[0]: must be an address (alice@example.com) or a domain (@example.com)")
        assert.include(message, "users[1].api_key: Expected string")
        assert.notInclude(message, "plaintext")
      }))

    it.effect("reports a missing users list, a wrong top level and duplicate names", () =>
      Effect.gen(function*() {
        const hash = yield* hashPassword("pw")
        assert.strictEqual(yield* problemOf(`{}`), "Users file /srv/users.json: users: Missing key")
        assert.strictEqual(yield* problemOf(`[]`), "Users file /srv/users.json: the top level: Expected object")
        const user = { username: "alice", password: hash, senders: [] }
        assert.strictEqual(
          yield* problemOf(JSON.stringify({ users: [user, user] })),
          `Users file /srv/users.json: users: the username "alice" appears more than once`
        )
      }))

    it.effect("rejects scrypt parameters it would not run", () =>
      Effect.gen(function*() {
        const salt = Buffer.alloc(16).toString("base64")
        const key = Buffer.alloc(32).toString("base64")
        const message = yield* problemOf(JSON.stringify({
          users: [{ username: "a", password: `scrypt$1000$8$1$${salt}$${key}`, senders: [] }]
        }))
        assert.include(message, "users[0].password: scrypt N must be a power of two from 1024 to 1048576")
      }))

    it.effect("says when the file does not exist", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const error = yield* Effect.flip(readUsersFile(path.join(dir, "users.json")))
        assert.strictEqual(error.reason, "missing")
        assert.strictEqual(error.message, `Users file ${path.join(dir, "users.json")}: does not exist`)
      }))
  })

  describe("writing", () => {
    it.effect("writes atomically with mode 0600 and leaves no temp file behind", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "nested", "users.json")
        const hash = yield* hashPassword("pw")
        yield* writeUsersFile(file, { users: [{ username: "alice", password: hash, senders: ["@example.com"] }] })
        assert.strictEqual(modeOf(file), 0o600)
        fs.chmodSync(file, 0o644)
        yield* writeUsersFile(file, { users: [{ username: "bob", password: hash, senders: [] }] })
        assert.strictEqual(modeOf(file), 0o600)
        assert.deepStrictEqual(fs.readdirSync(path.dirname(file)), ["users.json"])
        const back = yield* readUsersFile(file)
        assert.deepStrictEqual(back.users.map((u) => u.username), ["bob"])
      }))

    it.effect("reports a directory it cannot write to", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const blocker = path.join(dir, "not-a-dir")
        fs.writeFileSync(blocker, "")
        const error = yield* Effect.flip(writeUsersFile(path.join(blocker, "users.json"), { users: [] }))
        assert.strictEqual(error.reason, "unwritable")
        assert.include(error.message, "cannot be written")
      }))
  })

  describe("ensureUsersFile", () => {
    it.effect("creates the file once, with a generated user whose password verifies", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "data", "users.json")
        const created = yield* ensureUsersFile(file)
        assert.isTrue(Option.isSome(created))
        const { password, username } = Option.getOrThrow(created)
        assert.strictEqual(username, "smtp-user")
        assert.strictEqual(password.length, 24)
        assert.strictEqual(modeOf(file), 0o600)

        const content = yield* readUsersFile(file)
        assert.strictEqual(content.users.length, 1)
        assert.deepStrictEqual(content.users[0]!.senders, ["@example.com"])
        assert.isTrue(yield* verifyPassword(password, content.users[0]!.password))
        assert.notInclude(fs.readFileSync(file, "utf8"), password)

        const before = fs.readFileSync(file, "utf8")
        assert.isTrue(Option.isNone(yield* ensureUsersFile(file)))
        assert.strictEqual(fs.readFileSync(file, "utf8"), before)
        assert.deepStrictEqual(fs.readdirSync(path.dirname(file)), ["users.json"])
      }))
  })

  describe("addUser", () => {
    it.effect("creates the file, adds users and replaces one of the same name", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "users.json")
        const first = yield* addUser(file, { username: "alice", password: "pw-1", senders: ["alice@example.com"], apiKey: "key-1" })
        assert.deepStrictEqual([first.createdFile, first.replaced], [true, false])
        assert.strictEqual(first.summary, `Created ${file} with user "alice"`)

        const second = yield* addUser(file, { username: "bob", password: "pw-b", senders: ["@example.org"] })
        assert.deepStrictEqual([second.createdFile, second.replaced], [false, false])
        assert.strictEqual(second.summary, `Added user "bob" to ${file}`)

        const third = yield* addUser(file, { username: "alice", password: "pw-2", senders: ["@example.com"] })
        assert.deepStrictEqual([third.createdFile, third.replaced], [false, true])
        assert.strictEqual(third.summary, `Replaced user "alice" in ${file}`)

        const content = yield* readUsersFile(file)
        assert.deepStrictEqual(content.users.map((u) => u.username), ["alice", "bob"])
        const alice = content.users[0]!
        assert.deepStrictEqual(alice.senders, ["@example.com"])
        assert.isUndefined(alice.api_key)
        assert.isTrue(yield* verifyPassword("pw-2", alice.password))
        assert.isFalse(yield* verifyPassword("pw-1", alice.password))
        assert.strictEqual(modeOf(file), 0o600)
      }))

    it.effect("refuses bad names, empty passwords and bad senders without touching the file", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "users.json")
        const problem = (user: Parameters<typeof addUser>[1]) => Effect.map(Effect.flip(addUser(file, user)), (e) => e.message)
        assert.strictEqual(
          yield* problem({ username: "al ice", password: "pw", senders: ["@example.com"] }),
          "Invalid user: the username must not contain spaces or control characters"
        )
        assert.strictEqual(
          yield* problem({ username: "", password: "pw", senders: ["@example.com"] }),
          "Invalid user: the username must not be empty"
        )
        assert.strictEqual(
          yield* problem({ username: "a".repeat(255), password: "pw", senders: ["@example.com"] }),
          "Invalid user: the username must be at most 254 characters"
        )
        assert.strictEqual(
          yield* problem({ username: "alice", password: "", senders: ["@example.com"] }),
          "Invalid user: the password must not be empty"
        )
        assert.strictEqual(
          yield* problem({ username: "alice", password: "pw", senders: [] }),
          "Invalid user: give at least one sender (alice@example.com or @example.com)"
        )
        assert.strictEqual(
          yield* problem({ username: "alice", password: "pw", senders: ["example.com", "@example.com"] }),
          `Invalid user: "example.com" must be an address (alice@example.com) or a domain (@example.com)`
        )
        assert.isFalse(fs.existsSync(file))
      }))

    it.effect("refuses to add to a users file it cannot parse", () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const file = path.join(dir, "users.json")
        fs.writeFileSync(file, "{ not json")
        const error = yield* Effect.flip(addUser(file, { username: "alice", password: "pw", senders: ["@example.com"] }))
        assert.strictEqual(error._tag, "UsersFileError")
        assert.strictEqual(fs.readFileSync(file, "utf8"), "{ not json")
      }))
  })
})

/**
 * The users file of the `file` auth backend (design.md §5): its Schema, scrypt password hashes, and
 * reading, atomic writing, first-start creation and `users add`. Plain functions over the file system;
 * it is not the CredentialStore (auth/CredentialStore.ts serves logins from this file).
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as nodePath from "node:path"
import { Effect, Option, Predicate, Redacted, Result, Schema, SchemaIssue } from "effect"
import { SenderRule } from "../domain/Address.ts"

// ---------------------------------------------------------------------------------------------
// Errors

/** The users file is missing, unreadable, invalid or could not be written. */
export class UsersFileError extends Schema.TaggedError<UsersFileError>()("UsersFileError", {
  path: Schema.String,
  reason: Schema.Literals(["missing", "unreadable", "invalid", "unwritable"]),
  problem: Schema.String
}) {
  override get message() {
    return `Users file ${this.path}: ${this.problem}`
  }
}

/** A user given to `addUser` breaks a rule (name, password or senders). */
export class InvalidUser extends Schema.TaggedError<InvalidUser>()("InvalidUser", {
  problem: Schema.String
}) {
  override get message() {
    return `Invalid user: ${this.problem}`
  }
}

// ---------------------------------------------------------------------------------------------
// Schema

const usernameProblem = (name: string): string | undefined => {
  if (name.length === 0) return "must not be empty"
  if (name.length > 254) return "must be at most 254 characters"
  if (/[\s\u0000-\u001f\u007f-\u009f]/u.test(name)) return "must not contain spaces or control characters"
  return undefined
}

/** A login name: non-empty, at most 254 characters, no whitespace or control characters. */
const Username = Schema.String.check(Schema.makeFilter<string>(usernameProblem))

const b64 = "[A-Za-z0-9+/]+={0,2}"
const hashPattern = new RegExp(`^scrypt\\$(\\d{1,8})\\$(\\d{1,3})\\$(\\d{1,3})\\$(${b64})\\$(${b64})$`)

interface HashParams {
  readonly N: number
  readonly r: number
  readonly p: number
  readonly salt: Buffer
  readonly key: Buffer
}

/** Splits a stored hash; the problem in words when it is not one this module can verify. */
const parseHash = (hash: string): Result.Result<HashParams, string> => {
  const m = hashPattern.exec(hash)
  if (m === null) return Result.fail("must be scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>")
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (N < 1024 || N > 1_048_576 || (N & (N - 1)) !== 0) return Result.fail("scrypt N must be a power of two from 1024 to 1048576")
  if (r < 1 || r > 32) return Result.fail("scrypt r must be from 1 to 32")
  if (p < 1 || p > 16) return Result.fail("scrypt p must be from 1 to 16")
  const salt = Buffer.from(m[4]!, "base64")
  const key = Buffer.from(m[5]!, "base64")
  if (salt.length < 8) return Result.fail("the salt must be at least 8 bytes")
  if (key.length < 16 || key.length > 64) return Result.fail("the hash must be 16 to 64 bytes")
  return Result.succeed({ N, r, p, salt, key })
}

/** A stored password: `scrypt$<N>$<r>$<p>$<salt base64>$<hash base64>`. */
const PasswordHash = Schema.String.check(
  Schema.makeFilter<string>((hash) => Result.match(parseHash(hash), { onFailure: (p) => p, onSuccess: () => undefined }))
)

export const UserEntry = Schema.Struct({
  username: Username,
  password: PasswordHash,
  senders: Schema.Array(SenderRule),
  api_key: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty()))
})
export type UserEntry = typeof UserEntry.Type

const uniqueNames = Schema.makeFilter<ReadonlyArray<UserEntry>>((users) => {
  const seen = new Set<string>()
  for (const user of users) {
    if (seen.has(user.username)) return `the username "${user.username}" appears more than once`
    seen.add(user.username)
  }
  return undefined
})

export const UsersFileContent = Schema.Struct({
  users: Schema.Array(UserEntry).check(uniqueNames)
})
export type UsersFileContent = typeof UsersFileContent.Type

// ---------------------------------------------------------------------------------------------
// Password hashes

const scryptParams = { N: 16384, r: 8, p: 1 } as const
const saltBytes = 16
const keyBytes = 32

const scrypt = (password: string, params: { N: number; r: number; p: number; salt: Buffer; keylen: number }) =>
  Effect.callback<Buffer>((resume) => {
    crypto.scrypt(
      password,
      params.salt,
      params.keylen,
      { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1_048_576 },
      (error, key) => resume(error === null ? Effect.succeed(key) : Effect.die(error))
    )
  })

/** Hashes a password with scrypt (N=16384, r=8, p=1, 16-byte random salt, 32-byte key), off the event loop. */
export const hashPassword = (password: string): Effect.Effect<string> =>
  Effect.gen(function*() {
    const salt = crypto.randomBytes(saltBytes)
    const key = yield* scrypt(password, { ...scryptParams, salt, keylen: keyBytes })
    return `scrypt$${scryptParams.N}$${scryptParams.r}$${scryptParams.p}$${salt.toString("base64")}$${key.toString("base64")}`
  })

/** True when `password` matches the stored hash (constant-time comparison); false for a malformed hash. */
export const verifyPassword = (password: string, hash: string): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const parsed = parseHash(hash)
    if (Result.isFailure(parsed)) return false
    const { N, key, p, r, salt } = parsed.success
    const derived = yield* scrypt(password, { N, r, p, salt, keylen: key.length })
    return crypto.timingSafeEqual(derived, key)
  })

/** A strong random password: 24 characters of base64url (144 bits). */
export const generatePassword = (): string => crypto.randomBytes(18).toString("base64url")

// ---------------------------------------------------------------------------------------------
// Reading and writing

const isErrnoException = (u: unknown): u is NodeJS.ErrnoException =>
  Predicate.isError(u) && Predicate.hasProperty(u, "code")

const describeIoError = (u: unknown): string =>
  isErrnoException(u) ? `${u.code ?? "error"}: ${u.message}` : String(u)

const formatIssues = (issue: SchemaIssue.Issue): string =>
  SchemaIssue.makeFormatterStandardSchemaV1()(issue).issues
    .map((i) => {
      const where = i.path?.map((key) =>
        typeof key === "number" ? `[${key}]` : `.${String(typeof key === "object" ? key.key : key)}`
      ).join("").replace(/^\./, "")
      return where === undefined || where === "" ? `the top level: ${i.message}` : `${where}: ${i.message}`
    })
    .join("; ")

/**
 * What went wrong in JSON.parse, without the snippet of the file V8 puts in some messages (the file
 * holds password hashes and API keys).
 */
const jsonProblem = (text: string, error: unknown): string => {
  const message = Predicate.isError(error) ? error.message : ""
  const position = /at position (\d+)/.exec(message)
  if (position !== null) {
    const before = text.slice(0, Number(position[1]))
    const line = before.split("\n").length
    const column = before.length - before.lastIndexOf("\n")
    return `not valid JSON (syntax error at line ${line}, column ${column})`
  }
  if (/end of JSON input/.test(message)) return "not valid JSON (it ends too early)"
  const token = /^Unexpected token '(.)'/.exec(message)
  return token !== null ? `not valid JSON (unexpected '${token[1]}')` : "not valid JSON"
}

/** Decodes the text of a users file; the problem names the place (`users[0].senders[1]: ...`). */
export const parseUsersFile = (path: string, text: string): Effect.Effect<UsersFileContent, UsersFileError> =>
  Effect.gen(function*() {
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (error) {
      return yield* new UsersFileError({
        path,
        reason: "invalid",
        problem: jsonProblem(text, error)
      })
    }
    const decoded = Schema.decodeUnknownResult(UsersFileContent)(json, { errors: "all" })
    if (Result.isFailure(decoded)) {
      return yield* new UsersFileError({ path, reason: "invalid", problem: formatIssues(decoded.failure.issue) })
    }
    return decoded.success
  })

/** Reads and decodes the users file. */
export const readUsersFile = (path: string): Effect.Effect<UsersFileContent, UsersFileError> =>
  Effect.tryPromise({
    try: () => fs.readFile(path, "utf8"),
    catch: (error) =>
      isErrnoException(error) && error.code === "ENOENT"
        ? new UsersFileError({ path, reason: "missing", problem: "does not exist" })
        : new UsersFileError({ path, reason: "unreadable", problem: `cannot be read (${describeIoError(error)})` })
  }).pipe(Effect.flatMap((text) => parseUsersFile(path, text)))

const render = (content: UsersFileContent): string => `${JSON.stringify(content, null, 2)}\n`

/**
 * Writes `content` beside `path` in a temp file (mode 0600), fsyncs it and moves it into place:
 * readers see the old file or the new one, never half of one. With `exclusive`, an existing file is
 * left alone and the result is false.
 */
const writeAtomically = (path: string, content: UsersFileContent, exclusive: boolean): Effect.Effect<boolean, UsersFileError> =>
  Effect.tryPromise({
    try: async () => {
      const dir = nodePath.dirname(path)
      await fs.mkdir(dir, { recursive: true, mode: 0o700 })
      const temp = nodePath.join(dir, `.${nodePath.basename(path)}.${crypto.randomBytes(6).toString("hex")}.tmp`)
      try {
        const handle = await fs.open(temp, "wx", 0o600)
        try {
          await handle.chmod(0o600)
          await handle.writeFile(render(content), "utf8")
          await handle.sync()
        } finally {
          await handle.close()
        }
        if (exclusive) {
          try {
            await fs.link(temp, path) // fails with EEXIST instead of replacing
          } catch (error) {
            if (isErrnoException(error) && error.code === "EEXIST") return false
            throw error
          }
        } else {
          await fs.rename(temp, path)
        }
      } finally {
        await fs.rm(temp, { force: true })
      }
      const dirHandle = await fs.open(dir, "r")
      try {
        await dirHandle.sync()
      } catch {
        // some file systems cannot fsync a directory; the rename itself is still atomic
      } finally {
        await dirHandle.close()
      }
      return true
    },
    catch: (error) =>
      new UsersFileError({ path, reason: "unwritable", problem: `cannot be written (${describeIoError(error)})` })
  })

/** Replaces the users file atomically (temp file in the same directory, fsync, rename; mode 0600). */
export const writeUsersFile = (path: string, content: UsersFileContent): Effect.Effect<void, UsersFileError> =>
  Effect.asVoid(writeAtomically(path, content, false))

/** A user for `addUser`; secrets stay Redacted until they are hashed or written. */
export interface NewUser {
  readonly username: string
  readonly password: Redacted.Redacted<string>
  /** Addresses (`alice@example.com`) or domains (`@example.com`); at least one. */
  readonly senders: ReadonlyArray<string>
  /** What the `http` upstream receives as this user's bearer token. */
  readonly apiKey?: Option.Option<Redacted.Redacted<string>>
}

const validateUser = (user: NewUser): Effect.Effect<ReadonlyArray<SenderRule>, InvalidUser> =>
  Effect.gen(function*() {
    const nameProblem = usernameProblem(user.username)
    if (nameProblem !== undefined) return yield* new InvalidUser({ problem: `the username ${nameProblem}` })
    if (Redacted.value(user.password).length === 0) {
      return yield* new InvalidUser({ problem: "the password must not be empty" })
    }
    if (Option.exists(user.apiKey ?? Option.none(), (key) => Redacted.value(key).length === 0)) {
      return yield* new InvalidUser({ problem: "the API key must not be empty" })
    }
    if (user.senders.length === 0) {
      return yield* new InvalidUser({ problem: "give at least one sender (alice@example.com or @example.com)" })
    }
    const bad = user.senders.filter((s) => Option.isNone(Schema.decodeUnknownOption(SenderRule)(s)))
    if (bad.length > 0) {
      return yield* new InvalidUser({
        problem: `${bad.map((s) => `"${s}"`).join(", ")} must be an address (alice@example.com) or a domain (@example.com)`
      })
    }
    return user.senders
  })

/** What first start created: print it once, it is the only time the password is shown (hence plain). */
export interface CreatedUser {
  readonly username: string
  readonly password: string
  readonly path: string
}

/**
 * Creates the users file (and its directory) with one generated user when it does not exist yet.
 * `Option.none()` when the file already exists.
 */
export const ensureUsersFile = (path: string): Effect.Effect<Option.Option<CreatedUser>, UsersFileError> =>
  Effect.gen(function*() {
    const exists = yield* Effect.tryPromise({
      try: () => fs.stat(path).then(() => true),
      catch: (error) => error
    }).pipe(
      Effect.catch((error) =>
        isErrnoException(error) && error.code === "ENOENT"
          ? Effect.succeed(false)
          : Effect.fail(new UsersFileError({ path, reason: "unreadable", problem: `cannot be checked (${describeIoError(error)})` }))
      )
    )
    if (exists) return Option.none()
    const username = "smtp-user"
    const password = generatePassword()
    const hash = yield* hashPassword(password)
    const created = yield* writeAtomically(path, { users: [{ username, password: hash, senders: ["@example.com"] }] }, true)
    return created ? Option.some({ username, password, path }) : Option.none()
  })

/** What `addUser` did. */
export interface AddedUser {
  readonly path: string
  readonly username: string
  /** True when a user of that name existed and its entry was replaced. */
  readonly replaced: boolean
  /** True when the users file did not exist and was created. */
  readonly createdFile: boolean
  /** One line for the operator. */
  readonly summary: string
}

/**
 * Adds a user to the users file (`smtp-gateway users add`), creating the file when absent. A user of
 * the same name is replaced entirely (password, senders, API key).
 */
export const addUser = (path: string, user: NewUser): Effect.Effect<AddedUser, UsersFileError | InvalidUser> =>
  Effect.gen(function*() {
    const senders = yield* validateUser(user)
    const current = yield* readUsersFile(path).pipe(
      Effect.map(Option.some),
      Effect.catchIf((e) => e.reason === "missing", () => Effect.succeed(Option.none<UsersFileContent>()))
    )
    const hash = yield* hashPassword(Redacted.value(user.password))
    const apiKey = user.apiKey ?? Option.none()
    const entry: UserEntry = {
      username: user.username,
      password: hash,
      senders,
      ...(Option.isSome(apiKey) ? { api_key: Redacted.value(apiKey.value) } : {})
    }
    const users = Option.match(current, { onNone: () => [], onSome: (c) => c.users })
    const replaced = users.some((u) => u.username === user.username)
    const next = replaced ? users.map((u) => (u.username === user.username ? entry : u)) : [...users, entry]
    yield* writeUsersFile(path, { users: next })
    const createdFile = Option.isNone(current)
    const summary = replaced
      ? `Replaced user "${user.username}" in ${path}`
      : createdFile
      ? `Created ${path} with user "${user.username}"`
      : `Added user "${user.username}" to ${path}`
    return { path, username: user.username, replaced, createdFile, summary }
  })

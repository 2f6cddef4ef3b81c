/**
 * CredentialStore: where accounts come from (the auth backend). One interface, one implementation per
 * backend: `file` (the users file) here; `http` and `cakemail` in their own files. It verifies; it
 * does not cache (auth/Authenticator.ts does). The shape and errors are shared by every backend.
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import { Clock, Context, Effect, Layer, Option, Redacted, Result, Schema, Semaphore } from "effect"
import { GatewayConfig } from "../Config.ts"
import type { SenderRule } from "../domain/Address.ts"
import { type Credentials, Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"
import { generatePassword, hashPassword, readUsersFile, type UsersFileContent, type UsersFileError, verifyPassword } from "./UsersFile.ts"

/** Wrong username or password (or an account that may not log in). Cached briefly. */
export class InvalidCredentials extends Schema.TaggedError<InvalidCredentials>()("InvalidCredentials", {
  /** Said to the client after the standard text, when there is something useful to say (MFA). */
  hint: Schema.optional(Schema.String)
}) {}

/** The backend could not answer (timeout, 5xx, 429, unreadable users file). Never cached. */
export class BackendUnavailable extends Schema.TaggedError<BackendUnavailable>()("BackendUnavailable", {
  detail: Schema.String
}) {}

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: Schema.Union([InvalidCredentials, BackendUnavailable])
}) {
  get reply() {
    switch (this.reason._tag) {
      case "InvalidCredentials":
        return this.reason.hint === undefined ? Replies.authInvalid : Replies.authInvalidBecause(this.reason.hint)
      case "BackendUnavailable":
        return Replies.authUnavailable
    }
  }
}

export class CredentialStore extends Context.Service<CredentialStore, {
  readonly verify: (credentials: Credentials) => Effect.Effect<Principal, AuthError>
}>()("smtp-gateway/auth/CredentialStore") {
  /** The `file` backend: the users file at `AUTH_USERS_FILE`, re-read when it changes. */
  static readonly layerFile: Layer.Layer<CredentialStore, never, GatewayConfig> = Layer.effect(
    CredentialStore,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      return yield* makeFileStore(config.auth.usersFile)
    })
  )

  /** Fixed users with plaintext passwords, for tests; principals look like the `file` backend's. */
  static readonly layerMemory = (users: ReadonlyArray<MemoryUser>): Layer.Layer<CredentialStore> =>
    Layer.succeed(CredentialStore, makeMemoryStore(users))
}

const invalid = () => new AuthError({ reason: new InvalidCredentials({}) })

interface StoredUser {
  readonly hash: string
  readonly principal: Principal
}

const principalOf = (username: string, senders: ReadonlyArray<SenderRule>, apiKey: string | undefined): Principal =>
  new Principal({
    username,
    senders: Option.some(senders),
    apiKey: Option.map(Option.fromUndefinedOr(apiKey), Redacted.make),
    backend: "file",
    account: Option.none(),
    expiresAt: Option.none()
  })

const indexUsers = (content: UsersFileContent): ReadonlyMap<string, StoredUser> =>
  new Map(content.users.map((u) => [u.username, { hash: u.password, principal: principalOf(u.username, u.senders, u.api_key) }]))

/** How often, at most, the store looks at the users file for changes. */
const recheckInterval = 1000

/**
 * A store over the users file at `path`. The file is read at start and again when its size, mtime or
 * inode changed (looked at no more than once a second); while it is missing or invalid every login
 * fails with BackendUnavailable and the problem is logged (path and problem, never contents).
 */
export const makeFileStore = (path: string): Effect.Effect<CredentialStore["Service"]> =>
  Effect.gen(function*() {
    // Unknown users cost one scrypt too, so they take as long as a wrong password.
    const dummyHash = yield* hashPassword(generatePassword())
    const reload = yield* Semaphore.make(1)
    let state: { readonly stamp: string | undefined; readonly users: Result.Result<ReadonlyMap<string, StoredUser>, UsersFileError> } | undefined
    let checkedAt = Number.NEGATIVE_INFINITY

    const fileStamp = Effect.promise(() =>
      fs.stat(path).then((s) => `${s.ino}:${s.size}:${s.mtimeMs}`, () => undefined)
    )

    const load = Effect.gen(function*() {
      const stamp = yield* fileStamp
      const users = yield* Effect.result(Effect.map(readUsersFile(path), indexUsers))
      const previous = state
      state = { stamp, users }
      if (Result.isFailure(users)) {
        const problem = users.failure.problem
        if (previous === undefined || Result.isSuccess(previous.users) || previous.users.failure.problem !== problem) {
          yield* Effect.logWarning("Users file unusable; logins fail until it is fixed").pipe(
            Effect.annotateLogs({ path, problem })
          )
        }
      } else if (previous !== undefined) {
        yield* Effect.logInfo("Users file reloaded").pipe(Effect.annotateLogs({ path, users: users.success.size }))
      }
      return users
    })

    /** The current users, re-read when the file changed since the last look. */
    const current = reload.withPermit(Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      if (state !== undefined && now - checkedAt < recheckInterval) return state.users
      checkedAt = now
      if (state !== undefined && Result.isSuccess(state.users) && (yield* fileStamp) === state.stamp) return state.users
      return yield* load
    }))

    yield* load
    checkedAt = yield* Clock.currentTimeMillis

    const verify = Effect.fnUntraced(function*(credentials: Credentials) {
      const users = yield* current
      if (Result.isFailure(users)) {
        return yield* new AuthError({ reason: new BackendUnavailable({ detail: users.failure.message }) })
      }
      const user = users.success.get(credentials.username)
      const matches = yield* verifyPassword(Redacted.value(credentials.password), user?.hash ?? dummyHash)
      if (user === undefined || !matches) return yield* invalid()
      return user.principal
    }, Effect.withSpan("CredentialStore.verify"))
    return CredentialStore.of({ verify })
  })

/** A user of the memory store. */
export interface MemoryUser {
  readonly username: string
  readonly password: string
  readonly senders: ReadonlyArray<SenderRule>
  readonly apiKey?: string | undefined
}

const digest = (password: string) => crypto.createHash("sha256").update(password, "utf8").digest()

/** A store over fixed users; passwords are compared as SHA-256 digests in constant time. */
const makeMemoryStore = (users: ReadonlyArray<MemoryUser>): CredentialStore["Service"] => {
  const byName = new Map(users.map((u) => [u.username, {
    digest: digest(u.password),
    principal: principalOf(u.username, u.senders, u.apiKey)
  }]))
  const dummy = digest(generatePassword())
  return CredentialStore.of({
    verify: Effect.fnUntraced(function*(credentials: Credentials) {
      const user = byName.get(credentials.username)
      const matches = crypto.timingSafeEqual(digest(Redacted.value(credentials.password)), user?.digest ?? dummy)
      if (user === undefined || !matches) return yield* invalid()
      return user.principal
    }, Effect.withSpan("CredentialStore.verify"))
  })
}

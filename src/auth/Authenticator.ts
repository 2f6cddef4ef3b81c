/**
 * Authenticator: verify(Credentials) → Principal, through Effect's Cache in front of the
 * CredentialStore. Keys are an HMAC of username and password (never the plaintext); accepted
 * credentials live AUTH_CACHE_TTL, rejected ones briefly, backend outages not at all.
 * It does not count failures or lock anyone out (the SMTP layer does).
 */
import * as crypto from "node:crypto"
import { Cache, Clock, Context, Duration, Effect, Exit, Layer, Metric, Option, Redacted } from "effect"
import { GatewayConfig } from "../Config.ts"
import type { Credentials, Principal } from "../domain/Principal.ts"
import { apiKeyCacheSize } from "../observability/Metrics.ts"
import { AuthError, BackendUnavailable, CredentialStore, InvalidCredentials } from "./CredentialStore.ts"

export class Authenticator extends Context.Service<Authenticator, {
  readonly verify: (credentials: Credentials) => Effect.Effect<Principal, AuthError>
  /** Drops every cached entry for this principal (the upstream said 401/403 for its key). */
  readonly invalidate: (principal: Principal) => Effect.Effect<void>
}>()("smtp-gateway/auth/Authenticator") {
  static readonly layer: Layer.Layer<Authenticator, never, CredentialStore | GatewayConfig> = Layer.effect(
    Authenticator,
    Effect.gen(function*() {
      const store = yield* CredentialStore
      const config = yield* GatewayConfig
      return yield* makeAuthenticator(store, { cacheTtl: config.auth.cacheTtl })
    })
  )
}

/** How many credentials the cache holds at most (least recently used go first). */
export const cacheCapacity = 10_000
/** How long a rejected credential is answered from the cache. */
export const rejectedTtl = Duration.seconds(30)
/** A principal with an expiry leaves the cache this long before its grant ends. */
export const expiryMargin = Duration.seconds(30)

interface Verified {
  readonly principal: Principal
  readonly ttl: Duration.Duration
}

const samePrincipal = (a: Principal, b: Principal): boolean =>
  a.username === b.username &&
  Option.makeEquivalence((x: Redacted.Redacted<string>, y: Redacted.Redacted<string>) =>
    Redacted.value(x) === Redacted.value(y)
  )(a.apiKey, b.apiKey)

const rejectEarly = (credentials: Credentials): boolean =>
  credentials.username === "" ||
  Redacted.value(credentials.password) === "" ||
  Option.exists(credentials.authzid, (authzid) => authzid !== "" && authzid !== credentials.username)

/**
 * A key for credentials that keeps no password, even hashed plainly: an HMAC under a key made for this
 * process, over the user name's length, the user name and the password (the length keeps ("a\0", "b")
 * and ("a", "\0b") apart). Each call makes a new process key.
 */
export const makeCredentialKey = (): (credentials: Credentials) => string => {
  const hmacKey = crypto.randomBytes(32)
  return (credentials) => {
    const username = Buffer.from(credentials.username, "utf8")
    const length = Buffer.alloc(4)
    length.writeUInt32BE(username.length)
    return crypto.createHmac("sha256", hmacKey)
      .update(length)
      .update(username)
      .update(Redacted.value(credentials.password), "utf8")
      .digest("base64")
  }
}

export const makeAuthenticator = (
  store: CredentialStore["Service"],
  options: { readonly cacheTtl: Duration.Duration }
): Effect.Effect<Authenticator["Service"]> =>
  Effect.gen(function*() {
    const cacheKey = makeCredentialKey()

    // The credentials of lookups in flight, by key: the cache's lookup only receives the key. An entry
    // lives while some verify waits for it, so no password outlives its lookup.
    const inFlight = new Map<string, { readonly credentials: Credentials; holders: number }>()

    const lookup = (key: string): Effect.Effect<Verified, AuthError> =>
      Effect.gen(function*() {
        const pending = inFlight.get(key)
        // Only when every verify waiting for this key was interrupted before the lookup began.
        if (pending === undefined) {
          return yield* new AuthError({ reason: new BackendUnavailable({ detail: "the login was abandoned" }) })
        }
        const principal = yield* store.verify(pending.credentials)
        const now = yield* Clock.currentTimeMillis
        const ttl = Option.match(principal.expiresAt, {
          onNone: () => options.cacheTtl,
          onSome: (expiresAt) =>
            Duration.min(options.cacheTtl, Duration.millis(Math.max(0, expiresAt - Duration.toMillis(expiryMargin) - now)))
        })
        return { principal, ttl }
      })

    const cache = yield* Cache.makeWith(lookup, {
      capacity: cacheCapacity,
      timeToLive: (exit) => {
        if (Exit.isSuccess(exit)) return exit.value.ttl
        const error = Exit.findErrorOption(exit)
        return Option.isSome(error) && error.value.reason._tag === "InvalidCredentials" ? rejectedTtl : Duration.zero
      }
    })

    const recordSize = Effect.flatMap(Cache.size(cache), (size) => Metric.update(apiKeyCacheSize, size))

    const cached = (credentials: Credentials): Effect.Effect<Principal, AuthError> =>
      Effect.suspend(() => {
        const key = cacheKey(credentials)
        const pending = inFlight.get(key)
        if (pending === undefined) inFlight.set(key, { credentials, holders: 1 })
        else pending.holders++
        return Cache.get(cache, key).pipe(
          Effect.map((verified) => verified.principal),
          Effect.ensuring(Effect.sync(() => {
            const entry = inFlight.get(key)
            if (entry !== undefined && --entry.holders === 0) inFlight.delete(key)
          }))
        )
      })

    const verify = Effect.fnUntraced(
      function*(credentials: Credentials) {
        yield* Effect.annotateCurrentSpan({ "auth.user": credentials.username })
        if (rejectEarly(credentials)) return yield* new AuthError({ reason: new InvalidCredentials({}) })
        return yield* cached(credentials).pipe(Effect.ensuring(recordSize))
      },
      (effect, credentials) =>
        effect.pipe(
          Effect.tapError((error) =>
            Effect.logDebug("Authentication failed").pipe(
              Effect.annotateLogs({ username: credentials.username, reason: error.reason._tag })
            )
          ),
          Effect.tap(() => Effect.logDebug("Authenticated").pipe(Effect.annotateLogs({ username: credentials.username })))
        ),
      Effect.withSpan("Authenticator.verify")
    )

    const invalidate = Effect.fn("Authenticator.invalidate")(function*(principal: Principal) {
      const matching = Array.from(yield* Cache.entries(cache))
        .filter(([, verified]) => samePrincipal(verified.principal, principal))
        .map(([key]) => key)
      yield* Effect.forEach(matching, (key) => Cache.invalidate(cache, key), { discard: true })
      yield* recordSize
      yield* Effect.logDebug("Dropped cached credentials").pipe(
        Effect.annotateLogs({ username: principal.username, entries: matching.length })
      )
    })

    return Authenticator.of({ verify, invalidate })
  })

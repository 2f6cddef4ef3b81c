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
import { AuthError, CredentialStore, InvalidCredentials } from "./CredentialStore.ts"

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
const cacheCapacity = 10_000
/** How long a rejected credential is answered from the cache. */
const rejectedTtl = Duration.seconds(30)
/** A principal with an expiry leaves the cache this long before its grant ends. */
const expiryMargin = Duration.seconds(30)

interface Verified {
  readonly principal: Principal
  readonly ttl: Duration.Duration
}

/**
 * The credentials of the verify whose get starts a lookup (the cache's lookup only receives the key).
 * The lookup runs in its own fiber with that verify's context, and a fiber drops its context when it
 * ends, so no password outlives its lookup; a verify that joins a lookup in flight waits for it even
 * if the verify that started it is interrupted.
 */
class LookupCredentials extends Context.Service<LookupCredentials, Credentials>()(
  "smtp-gateway/auth/Authenticator/LookupCredentials"
) {}

const sameApiKey = Option.makeEquivalence((x: Redacted.Redacted<string>, y: Redacted.Redacted<string>) =>
  Redacted.value(x) === Redacted.value(y)
)

const samePrincipal = (a: Principal, b: Principal): boolean =>
  a.username === b.username && sameApiKey(a.apiKey, b.apiKey)

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

const makeAuthenticator = (
  store: CredentialStore["Service"],
  options: { readonly cacheTtl: Duration.Duration }
): Effect.Effect<Authenticator["Service"]> =>
  Effect.gen(function*() {
    const cacheKey = makeCredentialKey()

    const lookup = (_key: string): Effect.Effect<Verified, AuthError, LookupCredentials> =>
      Effect.gen(function*() {
        const principal = yield* store.verify(yield* LookupCredentials)
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
      },
      requireServicesAt: "lookup"
    })

    const recordSize = Effect.flatMap(Cache.size(cache), (size) => Metric.update(apiKeyCacheSize, size))

    const cached = (credentials: Credentials): Effect.Effect<Principal, AuthError> =>
      Cache.get(cache, cacheKey(credentials)).pipe(
        Effect.map((verified) => verified.principal),
        Effect.provideService(LookupCredentials, credentials)
      )

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

/**
 * The `cakemail` auth backend: a CredentialStore that exchanges SMTP credentials for a Cakemail access
 * token (password grant, or the refresh grant when this credential already has a refresh token), and
 * CakemailSenders: each account's confirmed senders, cached with a TTL, refreshed once on a miss.
 * It does not cache principals: auth/Authenticator.ts does, until `expiresAt` at the latest.
 */
import { Cache, Clock, Context, Duration, Effect, Exit, Layer, Option, Redacted } from "effect"
import { setNewest } from "../BoundedMap.ts"
import { type CakemailSender, CakemailApi, type TokenGrant, type TokenRefused } from "../cakemail/CakemailApi.ts"
import { type Credentials, Principal } from "../domain/Principal.ts"
import { Senders, SendersUnavailable } from "../policy/Senders.ts"
import { makeCredentialKey } from "./Authenticator.ts"
import { CredentialStore } from "./CredentialStore.ts"

/** The principal expires this long before the token does, so no submission carries a dying token. */
const expiryMargin = Duration.minutes(1)

/** Refresh tokens kept (one per credential); the oldest go first. */
const refreshCapacity = 10_000

/** epoch millis at which a principal built now from a grant of `expiresInSeconds` must be re-verified. */
export const principalExpiry = (now: number, expiresInSeconds: number): number => {
  const lifetime = Math.max(0, expiresInSeconds) * 1000
  return now + Math.max(lifetime / 2, lifetime - Duration.toMillis(expiryMargin))
}

interface StoredGrant {
  readonly refreshToken: Redacted.Redacted<string>
  readonly account: Option.Option<string>
}

/**
 * CredentialStore for AUTH_BACKEND=cakemail. A credential seen before is renewed with its refresh token
 * (no password on the wire); a refused refresh falls back to the password grant. Bad credentials and
 * MFA accounts are InvalidCredentials (MFA with a hint); outages are BackendUnavailable.
 */
const makeCakemailCredentialStore = Effect.gen(function*() {
  const api = yield* CakemailApi
  const keyOf = makeCredentialKey()
  const grants = new Map<string, StoredGrant>()
  const remember = (key: string, grant: StoredGrant) => setNewest(grants, key, grant, refreshCapacity)

  const verify = Effect.fn("CakemailAuth.verify")(function*(credentials: Credentials) {
    const key = keyOf(credentials)
    const stored = Option.fromNullishOr(grants.get(key))
    const passwordGrant = api.passwordGrant(credentials.username, credentials.password)
    const grant: TokenGrant = yield* Option.match(stored, {
      onNone: () => passwordGrant,
      onSome: (known) =>
        api.refreshGrant(known.refreshToken).pipe(
          Effect.catchReason("AuthError", "InvalidCredentials", () =>
            Effect.sync(() => grants.delete(key)).pipe(Effect.andThen(passwordGrant)))
        )
    })
    const account = Option.orElse(
      Option.fromNullishOr(grant.accounts[0]),
      () => Option.flatMap(stored, (s) => s.account)
    )
    remember(key, { refreshToken: grant.refreshToken, account })
    const now = yield* Clock.currentTimeMillis
    yield* Effect.annotateCurrentSpan({ "cakemail.grant": Option.isSome(stored) ? "refresh" : "password" })
    return new Principal({
      username: credentials.username,
      senders: Option.none(),
      apiKey: Option.some(grant.accessToken),
      backend: "cakemail",
      account,
      expiresAt: Option.some(principalExpiry(now, grant.expiresInSeconds))
    })
  })

  return CredentialStore.of({ verify })
})

/** CredentialStore for AUTH_BACKEND=cakemail (needs CakemailApi). */
export const layerCakemailCredentialStore: Layer.Layer<CredentialStore, never, CakemailApi> = Layer.effect(
  CredentialStore,
  makeCakemailCredentialStore
)

// ---- senders ----------------------------------------------------------------------------------------

export interface CakemailSendersOptions {
  /** How long an account's sender list is kept (default 5 minutes). */
  readonly ttl?: Duration.Input
  /**
   * A miss refreshes the list once, unless the list is younger than this (default 10 seconds): a client
   * that keeps trying an unconfirmed sender does not turn every MAIL into an API call.
   */
  readonly minRefreshInterval?: Duration.Input
}

interface SenderList {
  readonly confirmed: ReadonlyArray<CakemailSender>
  readonly fetchedAt: number
}

/** The bearer token a senders lookup uses: the token of the login that missed the cache. */
class LookupToken extends Context.Service<LookupToken, Redacted.Redacted<string>>()(
  "smtp-gateway/auth/CakemailAuth/LookupToken"
) {}

export class CakemailSenders extends Context.Service<CakemailSenders, {
  /**
   * The account's confirmed sender with this address (case-insensitive). TokenRefused: the API refused
   * the principal's token (fetching the list needs a new one).
   */
  readonly find: (
    principal: Principal,
    address: string
  ) => Effect.Effect<Option.Option<CakemailSender>, SendersUnavailable | TokenRefused>
  /** The account's confirmed sender with this id (what an `x-sender-id` header names). */
  readonly findById: (
    principal: Principal,
    id: string
  ) => Effect.Effect<Option.Option<CakemailSender>, SendersUnavailable | TokenRefused>
}>()("smtp-gateway/auth/CakemailSenders") {
  static readonly make = Effect.fnUntraced(function*(options: CakemailSendersOptions = {}) {
    const api = yield* CakemailApi
    const ttl = Duration.fromInputUnsafe(options.ttl ?? "5 minutes")
    const minRefresh = Duration.toMillis(Duration.fromInputUnsafe(options.minRefreshInterval ?? "10 seconds"))

    const cache = yield* Cache.makeWith(
      (_account: string) =>
        Effect.gen(function*() {
          const token = yield* LookupToken
          const all = yield* api.listSenders(token)
          const fetchedAt = yield* Clock.currentTimeMillis
          return { confirmed: all.filter((s) => s.confirmed), fetchedAt } satisfies SenderList
        }),
      {
        capacity: 10_000,
        timeToLive: (exit) => (Exit.isSuccess(exit) ? ttl : Duration.zero),
        requireServicesAt: "lookup"
      }
    )

    const lookup = (principal: Principal, matches: (sender: CakemailSender) => boolean) =>
      Effect.gen(function*() {
        if (Option.isNone(principal.apiKey)) {
          return yield* new SendersUnavailable({ detail: "this login has no Cakemail token" })
        }
        const account = Option.getOrElse(principal.account, () => `user:${principal.username}`)
        const withToken = Effect.provideService(LookupToken, principal.apiKey.value)
        const first = yield* withToken(Cache.get(cache, account))
        const hit = first.confirmed.find(matches)
        if (hit !== undefined) return Option.some(hit)
        const now = yield* Clock.currentTimeMillis
        if (now - first.fetchedAt < minRefresh) return Option.none()
        const fresh = yield* withToken(Cache.refresh(cache, account))
        return Option.fromNullishOr(fresh.confirmed.find(matches))
      })

    const find = Effect.fn("CakemailSenders.find")((principal: Principal, address: string) => {
      const lower = address.toLowerCase()
      return lookup(principal, (s) => s.email.toLowerCase() === lower)
    })
    const findById = Effect.fn("CakemailSenders.findById")((principal: Principal, id: string) => {
      const wanted = id.trim()
      return lookup(principal, (s) => s.id === wanted)
    })
    return CakemailSenders.of({ find, findById })
  })

  static readonly layer: Layer.Layer<CakemailSenders, never, CakemailApi> = Layer.effect(
    CakemailSenders,
    CakemailSenders.make()
  )
  static readonly layerWith = (options: CakemailSendersOptions): Layer.Layer<CakemailSenders, never, CakemailApi> =>
    Layer.effect(CakemailSenders, CakemailSenders.make(options))

  /** The policy's Senders (MAIL FROM, From header) answered from the account's confirmed senders. */
  static readonly layerPolicy: Layer.Layer<Senders, never, CakemailSenders> = Layer.effect(
    Senders,
    Effect.gen(function*() {
      const senders = yield* CakemailSenders
      return Senders.of({
        allowed: (principal, address) =>
          senders.find(principal, address).pipe(
            Effect.map(Option.isSome),
            Effect.catchTag("TokenRefused", (refused) =>
              Effect.fail(new SendersUnavailable({ detail: `the senders API refused the login's token (${refused.status})` })))
          )
      })
    })
  )
}

/**
 * The `http` auth backend (design.md §5): a CredentialStore that asks a generic auth API at AUTH_URL,
 * `POST {username, password}` → `200 {api_key, expires_in?, senders?}`. 401/403 are bad credentials;
 * 429, 5xx, timeouts and connection errors are temporary (retried twice, then BackendUnavailable).
 * It does not cache (auth/Authenticator.ts does) and never logs the password or the key.
 */
import { Clock, Data, Duration, Effect, Layer, Option, Redacted, Schedule, Schema } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { SenderRule } from "../domain/Address.ts"
import { type Credentials, Principal } from "../domain/Principal.ts"
import { GatewayConfig } from "../Config.ts"
import { AuthError, BackendUnavailable, CredentialStore, InvalidCredentials } from "./CredentialStore.ts"

export interface HttpAuthOptions {
  /** AUTH_URL. */
  readonly url: URL
  /** Per attempt (default 5 seconds). */
  readonly timeout?: Duration.Input
  /** Retries of temporary failures (default 2). */
  readonly retries?: number
  /** First backoff, doubled each retry, jittered (default 250 millis). */
  readonly backoff?: Duration.Input
}

const AuthAnswer = Schema.Struct({
  api_key: Schema.String.check(Schema.isNonEmpty()),
  expires_in: Schema.optionalKey(Schema.NullOr(Schema.Number.check(Schema.isGreaterThan(0)))),
  senders: Schema.optionalKey(Schema.NullOr(Schema.Array(SenderRule)))
})
const decodeAnswer = Schema.decodeUnknownOption(Schema.fromJsonString(AuthAnswer))

class Temporary extends Data.TaggedError("Temporary")<{ readonly detail: string }> {}

/** CredentialStore for AUTH_BACKEND=http. */
const makeHttpCredentialStore = Effect.fnUntraced(function*(options: HttpAuthOptions) {
  const client = yield* HttpClient.HttpClient
  const timeout = options.timeout ?? "5 seconds"
  const schedule = Schedule.exponential(options.backoff ?? "250 millis").pipe(Schedule.jittered)

  const attempt = (credentials: Credentials) =>
    client.execute(HttpClientRequest.post(options.url).pipe(
      HttpClientRequest.acceptJson,
      HttpClientRequest.bodyJsonUnsafe({
        username: credentials.username,
        password: Redacted.value(credentials.password)
      })
    )).pipe(
      Effect.flatMap((response) => Effect.map(response.text, (body) => ({ status: response.status, body }))),
      Effect.timeout(timeout),
      Effect.mapError((error) =>
        new Temporary({ detail: error._tag === "TimeoutError" ? "auth API timed out" : "auth API unreachable" })
      ),
      Effect.flatMap(({ status, body }) => {
        if (status === 401 || status === 403) return Effect.succeed(Option.none())
        if (status === 200) {
          return Option.match(decodeAnswer(body), {
            onNone: () => Effect.fail(new Temporary({ detail: "auth API answered an unreadable body" })),
            onSome: (answer) => Effect.succeed(Option.some(answer))
          })
        }
        return Effect.fail(new Temporary({ detail: `auth API answered ${status}` }))
      })
    )

  const verify = Effect.fn("HttpAuth.verify")(function*(credentials: Credentials) {
    const answer = yield* attempt(credentials).pipe(
      Effect.retry({ schedule, times: options.retries ?? 2 }),
      Effect.mapError(({ detail }) => new AuthError({ reason: new BackendUnavailable({ detail }) }))
    )
    if (Option.isNone(answer)) return yield* new AuthError({ reason: new InvalidCredentials({}) })
    const { api_key, expires_in, senders } = answer.value
    const now = yield* Clock.currentTimeMillis
    return new Principal({
      username: credentials.username,
      senders: Option.fromNullishOr(senders),
      apiKey: Option.some(Redacted.make(api_key)),
      backend: "http",
      account: Option.none(),
      expiresAt: Option.map(Option.fromNullishOr(expires_in), (seconds) => now + seconds * 1000)
    })
  })

  return CredentialStore.of({ verify })
})

/** CredentialStore for AUTH_BACKEND=http, AUTH_URL from GatewayConfig, the HttpClient from context. */
export const layerHttpCredentialStore: Layer.Layer<CredentialStore, never, GatewayConfig | HttpClient.HttpClient> =
  Layer.effect(
    CredentialStore,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      if (Option.isNone(config.auth.url)) return yield* Effect.die("AUTH_BACKEND=http needs AUTH_URL")
      return yield* makeHttpCredentialStore({ url: config.auth.url.value })
    })
  )

/** For tests: the options given, the HttpClient from context. */
export const layerHttpCredentialStoreWith = (
  options: HttpAuthOptions
): Layer.Layer<CredentialStore, never, HttpClient.HttpClient> =>
  Layer.effect(CredentialStore, makeHttpCredentialStore(options))

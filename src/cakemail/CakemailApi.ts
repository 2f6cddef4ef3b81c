/**
 * CakemailApi: the one client of the Cakemail API (CAKEMAIL_API_URL): the token exchange (password and
 * refresh grants), the confirmed-senders listing and the email submission, with the schemas of their
 * answers and the classification of every failure. Holds no cache and no policy (auth/CakemailAuth.ts
 * and delivery/CakemailUpstream.ts do); never logs a password, a token or a message body.
 */
import { Clock, Context, Data, Duration, Effect, Layer, Option, Redacted, Schedule, Schema } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import type * as Headers from "effect/http/Headers"
import { AuthError, BackendUnavailable, InvalidCredentials } from "../auth/CredentialStore.ts"
import { GatewayConfig } from "../Config.ts"
import { errorReason, readCapped, retryAfterMillis } from "../delivery/HttpReply.ts"
import { toHttpBody } from "../delivery/JsonBody.ts"
import { UpstreamError } from "../delivery/Upstream.ts"
import type { AttachmentContent } from "../domain/Message.ts"
import { SendersUnavailable } from "../policy/Senders.ts"

/** How one auth-path call (token, senders) is made: per-attempt timeout, retries of temporary failures. */
export interface CallPolicy {
  readonly timeout: Duration.Input
  readonly retries: number
  readonly backoff: Duration.Input
}

/** 5 s per attempt, 2 retries with exponential backoff (jittered): inside the SMTP reply budget. */
const defaultCallPolicy: CallPolicy = { timeout: "5 seconds", retries: 2, backoff: "250 millis" }

/** Said after `535 5.7.8 Authentication credentials invalid:` when the account answers with an MFA challenge. */
export const mfaHint = "accounts with multi-factor authentication need an API-only credential for SMTP"

// ---- answers of the API ---------------------------------------------------------------------------

const TokenAnswer = Schema.Struct({
  access_token: Schema.String,
  token_type: Schema.optionalKey(Schema.String),
  expires_in: Schema.Number,
  refresh_token: Schema.String,
  accounts: Schema.optionalKey(Schema.Array(Schema.Union([Schema.Number, Schema.String])))
})
const ChallengeAnswer = Schema.Struct({ challenge: Schema.String })

const SenderAnswer = Schema.Struct({
  id: Schema.Union([Schema.String, Schema.Number]),
  name: Schema.optionalKey(Schema.NullOr(Schema.String)),
  email: Schema.String,
  confirmed: Schema.optionalKey(Schema.NullOr(Schema.Boolean))
})
const SendersPageAnswer = Schema.Struct({
  pagination: Schema.optionalKey(Schema.Struct({
    page: Schema.optionalKey(Schema.NullOr(Schema.Number)),
    per_page: Schema.optionalKey(Schema.NullOr(Schema.Number)),
    count: Schema.optionalKey(Schema.NullOr(Schema.Number))
  })),
  data: Schema.Array(SenderAnswer)
})

const SubmitAnswer = Schema.Struct({
  email: Schema.optionalKey(Schema.String),
  object: Schema.optionalKey(Schema.String),
  submitted: Schema.optionalKey(Schema.Boolean),
  data: Schema.Struct({ id: Schema.Union([Schema.String, Schema.Number]), status: Schema.String })
})

const decodeToken = Schema.decodeUnknownOption(Schema.fromJsonString(TokenAnswer))
const decodeChallenge = Schema.decodeUnknownOption(Schema.fromJsonString(ChallengeAnswer))
const decodeSendersPage = Schema.decodeUnknownOption(Schema.fromJsonString(SendersPageAnswer))
const decodeSubmit = Schema.decodeUnknownOption(Schema.fromJsonString(SubmitAnswer))

// ---- what the client hands back -------------------------------------------------------------------

export interface TokenGrant {
  readonly accessToken: Redacted.Redacted<string>
  readonly refreshToken: Redacted.Redacted<string>
  readonly expiresInSeconds: number
  /** Account ids the token may act for; the first is the login's own account. */
  readonly accounts: ReadonlyArray<string>
}

export interface CakemailSender {
  readonly id: string
  readonly name: string
  readonly email: string
  readonly confirmed: boolean
}

/** `POST /v2/emails` body (one recipient). */
export interface EmailRequest {
  readonly email: string
  readonly sender: { readonly id: string; readonly name?: string }
  readonly content: {
    readonly subject: string
    readonly html?: string
    readonly text?: string
    readonly encoding: "utf-8"
    readonly type: "transactional" | "marketing"
  }
  readonly list_id?: number
  readonly tags?: ReadonlyArray<string>
  readonly tracking?: { readonly opens?: boolean; readonly clicks_html?: boolean; readonly clicks_text?: boolean }
  readonly additional_headers?: ReadonlyArray<{ readonly name: string; readonly value: string }>
  /** `content` goes out as base64 (delivery/JsonBody.ts). */
  readonly attachment?: ReadonlyArray<{ readonly filename: string; readonly type: AttachmentType; readonly content: AttachmentContent }>
}

/** The attachment types `POST /v2/emails` accepts. */
export type AttachmentType = "csv" | "doc" | "docx" | "calendar" | "jpeg" | "pdf" | "png" | "xls" | "xlsx"

/** What `POST /v2/emails` answered with a 2xx: its id and status (`queued`, `rejected`, `error`, ...). */
export interface SubmittedEmail {
  readonly id: string
  readonly status: string
}

/** The API refused the login's access token (401/403): a new token is needed, not a later retry. */
export class TokenRefused extends Schema.TaggedError<TokenRefused>()("TokenRefused", {
  status: Schema.Int
}) {}

// ---- one exchange ---------------------------------------------------------------------------------

interface Answer {
  readonly status: number
  readonly headers: Headers.Headers
  readonly body: string
}

class CallFailed extends Data.TaggedError("CallFailed")<{ readonly timedOut: boolean; readonly detail: string }> {}

const endpoint = (base: URL, path: string): URL =>
  new URL(path, base.href.endsWith("/") ? base : new URL(`${base.href}/`))

export interface CakemailApiOptions {
  /** CAKEMAIL_API_URL. */
  readonly baseUrl: URL
  /** Token and senders calls. */
  readonly policy?: CallPolicy
  /**
   * A bound on one `POST /v2/emails` attempt, for tests that use the client without Delivery; the
   * gateway sets none (Delivery times out each attempt, and retries).
   */
  readonly submitTimeout?: Duration.Input
  /** Senders asked for per page (the API may answer with fewer). */
  readonly sendersPerPage?: number
}

/** A guard against an API that never says "last page". */
const maxSenderPages = 200

export class CakemailApi extends Context.Service<CakemailApi, {
  /** `POST /token` with `grant_type=password`; retried on temporary failures. */
  readonly passwordGrant: (username: string, password: Redacted.Redacted<string>) => Effect.Effect<TokenGrant, AuthError>
  /** `POST /token` with `grant_type=refresh_token`; an InvalidCredentials means "use the password grant". */
  readonly refreshGrant: (refreshToken: Redacted.Redacted<string>) => Effect.Effect<TokenGrant, AuthError>
  /** Every page of `GET /brands/default/senders`, confirmed or not. */
  readonly listSenders: (
    token: Redacted.Redacted<string>
  ) => Effect.Effect<ReadonlyArray<CakemailSender>, SendersUnavailable | TokenRefused>
  /** One `POST /v2/emails`, one attempt; a 2xx whatever its `data.status`, else a classified UpstreamError. */
  readonly submitEmail: (
    token: Redacted.Redacted<string>,
    email: EmailRequest,
    idempotencyKey: string
  ) => Effect.Effect<SubmittedEmail, UpstreamError>
}>()("smtp-gateway/cakemail/CakemailApi") {
  static readonly make = Effect.fnUntraced(function*(options: CakemailApiOptions) {
    const client = yield* HttpClient.HttpClient
    const policy = options.policy ?? defaultCallPolicy
    const perPage = options.sendersPerPage ?? 50
    const retry = Schedule.exponential(policy.backoff).pipe(Schedule.jittered)

    // made once: a request is immutable, and building it from the URL parses the URL each time
    const tokenRequest = HttpClientRequest.post(endpoint(options.baseUrl, "token")).pipe(HttpClientRequest.acceptJson)
    const sendersRequest = HttpClientRequest.get(endpoint(options.baseUrl, "brands/default/senders")).pipe(
      HttpClientRequest.acceptJson
    )
    const emailsRequest = HttpClientRequest.post(endpoint(options.baseUrl, "v2/emails")).pipe(
      HttpClientRequest.acceptJson
    )

    /** One request and its answer (the body read up to its cap), within `timeout` when one is given. */
    const exchange = (request: HttpClientRequest.HttpClientRequest, timeout: Duration.Input | undefined) => {
      const call = client.execute(request).pipe(
        Effect.flatMap((response) =>
          Effect.map(readCapped(response), (body): Answer => ({
            status: response.status,
            headers: response.headers,
            body
          }))
        )
      )
      return (timeout === undefined ? call : Effect.timeout(call, timeout)).pipe(
        Effect.mapError((error) =>
          error._tag === "TimeoutError"
            ? new CallFailed({ timedOut: true, detail: "timed out" })
            : new CallFailed({ timedOut: false, detail: `connection failed (${error.reason._tag})` })
        )
      )
    }

    const unavailable = (detail: string) => new AuthError({ reason: new BackendUnavailable({ detail }) })
    const invalid = (hint?: string) =>
      new AuthError({ reason: new InvalidCredentials(hint === undefined ? {} : { hint }) })

    const tokenCall = (form: Record<string, string>) =>
      exchange(HttpClientRequest.bodyUrlParams(tokenRequest, form), policy.timeout).pipe(
        Effect.mapError((failure) => unavailable(`Cakemail /token ${failure.detail}`)),
        Effect.flatMap((answer): Effect.Effect<TokenGrant, AuthError> => {
          // an MFA challenge, whatever the status, means this login cannot get a token here
          if (Option.isSome(decodeChallenge(answer.body))) return Effect.fail(invalid(mfaHint))
          if (answer.status >= 200 && answer.status < 300) {
            return Option.match(decodeToken(answer.body), {
              onNone: () => Effect.fail(unavailable("Cakemail /token answered an unreadable body")),
              onSome: (token) =>
                Effect.succeed({
                  accessToken: Redacted.make(token.access_token),
                  refreshToken: Redacted.make(token.refresh_token),
                  expiresInSeconds: token.expires_in,
                  accounts: (token.accounts ?? []).map(String)
                })
            })
          }
          if ([400, 401, 403, 422].includes(answer.status)) return Effect.fail(invalid())
          return Effect.fail(unavailable(`Cakemail /token answered ${answer.status}`))
        }),
        Effect.retry({
          schedule: retry,
          times: policy.retries,
          while: (error) => error.reason._tag === "BackendUnavailable"
        })
      )

    const passwordGrant = Effect.fn("CakemailApi.passwordGrant")(
      (username: string, password: Redacted.Redacted<string>) =>
        tokenCall({ grant_type: "password", username, password: Redacted.value(password) })
    )

    const refreshGrant = Effect.fn("CakemailApi.refreshGrant")(
      (refreshToken: Redacted.Redacted<string>) =>
        tokenCall({ grant_type: "refresh_token", refresh_token: Redacted.value(refreshToken) })
    )

    type PageFailure = { readonly temporary: boolean; readonly detail: string; readonly status?: number }
    const sendersPage = (token: Redacted.Redacted<string>, page: number) =>
      exchange(sendersRequest.pipe(
        HttpClientRequest.bearerToken(Redacted.value(token)),
        HttpClientRequest.setUrlParams({ page: String(page), per_page: String(perPage) })
      ), policy.timeout).pipe(
        Effect.mapError((failure): PageFailure => ({ temporary: true, detail: `Cakemail senders ${failure.detail}` })),
        Effect.flatMap((answer) => {
          if (answer.status === 200) {
            return Option.match(decodeSendersPage(answer.body), {
              onNone: () =>
                Effect.fail<PageFailure>({ temporary: true, detail: "Cakemail senders answered an unreadable body" }),
              onSome: Effect.succeed
            })
          }
          const temporary = answer.status === 429 || answer.status === 408 || answer.status >= 500
          return Effect.fail<PageFailure>({ temporary, detail: `Cakemail senders answered ${answer.status}`, status: answer.status })
        }),
        Effect.retry({ schedule: retry, times: policy.retries, while: (failure) => failure.temporary }),
        Effect.mapError((failure) =>
          failure.status === 401 || failure.status === 403
            ? new TokenRefused({ status: failure.status })
            : new SendersUnavailable({ detail: failure.detail })
        )
      )

    const listSenders = Effect.fn("CakemailApi.listSenders")(function*(token: Redacted.Redacted<string>) {
      const senders: Array<CakemailSender> = []
      for (let page = 1; page <= maxSenderPages; page++) {
        const answer = yield* sendersPage(token, page)
        for (const s of answer.data) {
          senders.push({ id: String(s.id), name: s.name ?? "", email: s.email, confirmed: s.confirmed === true })
        }
        const pageSize = answer.pagination?.per_page ?? perPage
        const count = answer.pagination?.count
        const done = answer.data.length === 0 || answer.data.length < pageSize ||
          (typeof count === "number" && senders.length >= count)
        if (done) break
      }
      return senders
    })

    const submitEmail = Effect.fn("CakemailApi.submitEmail")(
      function*(token: Redacted.Redacted<string>, email: EmailRequest, idempotencyKey: string) {
        const answer = yield* exchange(emailsRequest.pipe(
          HttpClientRequest.bearerToken(Redacted.value(token)),
          HttpClientRequest.setHeader("idempotency-key", idempotencyKey),
          HttpClientRequest.setBody(toHttpBody(email))
        ), options.submitTimeout).pipe(
          Effect.mapError((failure) =>
            new UpstreamError({
              kind: failure.timedOut ? "Timeout" : "Temporary",
              detail: `the email API ${failure.detail}`
            })
          )
        )
        yield* Effect.annotateCurrentSpan({ "http.response.status_code": answer.status })
        const status = answer.status
        if (status >= 200 && status < 300) {
          const submitted = decodeSubmit(answer.body)
          if (Option.isNone(submitted)) {
            // The API took the email: saying "retry" would send it twice.
            yield* Effect.logWarning("the email API accepted an email with an unreadable answer").pipe(
              Effect.annotateLogs({ status })
            )
            return { id: "unknown", status: "queued" }
          }
          return { id: String(submitted.value.data.id), status: submitted.value.data.status }
        }
        if (status === 408 || status === 429 || status >= 500) {
          // only a retryable failure carries its Retry-After: nothing waits on a permanent one
          const retryAfter = retryAfterMillis(answer.headers["retry-after"], yield* Clock.currentTimeMillis)
          return yield* new UpstreamError({
            kind: "Temporary",
            detail: `the email API answered ${status}`,
            status,
            ...(retryAfter === undefined ? {} : { retryAfterMillis: retryAfter })
          })
        }
        const reason = errorReason(answer.body, `status ${status}`)
        const fail = (kind: UpstreamError["kind"], detail: string) => new UpstreamError({ kind, detail, status })
        if (status === 401 || status === 403) return yield* fail("Unauthorized", `the email API refused the token: ${reason}`)
        if (status === 413) return yield* fail("TooLarge", reason)
        return yield* fail("Rejected", reason)
      }
    )

    return CakemailApi.of({ passwordGrant, refreshGrant, listSenders, submitEmail })
  })

  /** For tests and tools: a base URL (and timeouts) given, the HttpClient from context. */
  static readonly layerWith = (options: CakemailApiOptions) => Layer.effect(CakemailApi, CakemailApi.make(options))

  /** CAKEMAIL_API_URL from GatewayConfig (Delivery times each submission); the HttpClient (keep-alive pool) from context. */
  static readonly layer = Layer.effect(
    CakemailApi,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      return yield* CakemailApi.make({ baseUrl: config.cakemail.apiUrl })
    })
  )
}

/**
 * The `http` upstream (design.md §5): one `POST UPSTREAM_URL` per message with the canonical JSON,
 * the principal's bearer key, an Idempotency-Key and `traceparent`; the answer's status becomes an
 * `UpstreamAccepted` or a classified `UpstreamError`. No timeout or retry here: Delivery owns both.
 */
import { Clock, Effect, Layer, Option, Redacted, Schema } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { ConfigInvalid, GatewayConfig } from "../Config.ts"
import { errorReason, readCapped, retryAfterMillis } from "./HttpReply.ts"
import { toHttpBody } from "./JsonBody.ts"
import { metered, type Outbound, Upstream, type UpstreamAccepted, UpstreamError } from "./Upstream.ts"

/** `{ "id": "..." }`; some APIs send a number. */
const Accepted = Schema.Struct({ id: Schema.Union([Schema.NonEmptyString, Schema.Finite]) })
const decodeAccepted = Schema.decodeUnknownOption(Schema.fromJsonString(Accepted))

/** The status mapping of design.md §5. */
const classify = (
  status: number,
  body: string,
  retryAfter: number | undefined
): Effect.Effect<UpstreamAccepted, UpstreamError> => {
  if (status >= 200 && status < 300) {
    return Option.match(decodeAccepted(body), {
      onSome: ({ id }) => Effect.succeed({ upstreamId: String(id) }),
      // the API said yes: failing now would make the client send the message again
      onNone: () =>
        Effect.logWarning("the email API accepted the message without an id").pipe(
          Effect.annotateLogs({ status }),
          Effect.as({ upstreamId: "unknown" })
        )
    })
  }
  const error = (kind: UpstreamError["kind"], detail: string) =>
    Effect.fail(
      new UpstreamError({
        kind,
        detail,
        status,
        ...(kind === "Temporary" && retryAfter !== undefined ? { retryAfterMillis: retryAfter } : {})
      })
    )
  if (status === 400 || status === 422) return error("Rejected", errorReason(body, `HTTP ${status}`))
  if (status === 401 || status === 403) return error("Unauthorized", `HTTP ${status}`)
  if (status === 413) return error("TooLarge", `HTTP ${status}`)
  // 429, 5xx, and what the contract does not name (404, 409, 3xx...): the gateway keeps no queue,
  // so only the statuses named as permanent may turn a message away for good
  return error("Temporary", `HTTP ${status}`)
}

const make = Effect.gen(function*() {
  const config = yield* GatewayConfig
  const url = yield* Option.match(config.upstream.url, {
    onSome: Effect.succeed,
    onNone: () =>
      Effect.fail(new ConfigInvalid({ problems: ["UPSTREAM_URL: required when UPSTREAM=http; set the email API endpoint"] }))
  })
  const client = yield* HttpClient.HttpClient
  // made once: a request is immutable, and building it from the URL parses the URL each time
  const post = HttpClientRequest.post(url)

  const submit = Effect.fnUntraced(function*(outbound: Outbound) {
    const request = post.pipe(
      HttpClientRequest.setHeaders({ "idempotency-key": outbound.idempotencyKey, accept: "application/json" }),
      Option.match(outbound.principal.apiKey, {
        onNone: () => (r: HttpClientRequest.HttpClientRequest) => r,
        onSome: (key) => HttpClientRequest.bearerToken(Redacted.value(key))
      }),
      // the canonical JSON (CanonicalMessage's encoding, key order as toCanonical writes it), its
      // attachments base64-encoded as the socket takes them
      HttpClientRequest.setBody(toHttpBody(outbound.message))
    )
    return yield* metered(client.execute(request).pipe(
      Effect.catchTag("HttpClientError", (e) =>
        Effect.logWarning("the email API could not be reached", e.reason._tag, e.message).pipe(
          Effect.andThen(new UpstreamError({ kind: "Temporary", detail: "the email API could not be reached" }))
        )),
      Effect.flatMap((response) =>
        Effect.gen(function*() {
          yield* Effect.annotateCurrentSpan({ "http.response.status_code": response.status })
          const body = yield* readCapped(response)
          const now = yield* Clock.currentTimeMillis
          return yield* classify(response.status, body, retryAfterMillis(response.headers["retry-after"], now))
        })
      )
    ))
  })

  return Upstream.of({ name: "http", perRecipient: false, submit })
})

/** Needs `config.upstream.url` (fails at startup without it) and an `HttpClient`. */
export const layer: Layer.Layer<Upstream, ConfigInvalid, GatewayConfig | HttpClient.HttpClient> = Layer.effect(
  Upstream,
  make
)

/**
 * Reading an email API's HTTP answer, for both HTTP upstreams (`http` and `cakemail`): the body, read
 * up to a cap; the reason an error body gives, made safe for an SMTP reply and a log line; and the
 * Retry-After header. No status mapping (each upstream owns its own).
 */
import { DateTime, Effect, Option, Predicate, Schema, Stream } from "effect"
import type { HttpClientResponse } from "effect/http"

/** More than any id, token or error document; a larger answer is cut, never buffered whole. */
export const maxResponseBytes = 64 * 1024

/**
 * Reads at most `maxResponseBytes` of the body as text; a body that breaks off reads as what arrived.
 * A body whose Content-Length is within the cap is read whole (the HTTP parser stops at that length);
 * this way ends the request normally, where a stream read aborts it once done (a DOMException each).
 */
export const readCapped = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string> => {
  const declared = response.headers["content-length"]
  if (declared !== undefined && /^\d{1,9}$/.test(declared) && Number(declared) <= maxResponseBytes) {
    return Effect.orElseSucceed(response.text, () => "")
  }
  return readStream(response)
}

/** `readCapped` for a body of unknown or large length: chunk by chunk, stopping at the cap. */
const readStream = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<string> => {
  const chunks: Array<Uint8Array> = []
  let size = 0
  return Stream.runForEachWhile(response.stream, (chunk) =>
    Effect.sync(() => {
      const room = maxResponseBytes - size
      chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk)
      size += Math.min(chunk.length, room)
      return size < maxResponseBytes
    })).pipe(
      Effect.ignore,
      Effect.map(() => Buffer.concat(chunks).toString("utf8"))
    )
}

const decodeJson = Schema.decodeUnknownOption(Schema.fromJsonString(Schema.Unknown))
/** FastAPI's validation errors: `{detail: [{loc, msg}]}`. */
const decodeDetailList = Schema.decodeUnknownOption(Schema.Array(Schema.Struct({
  loc: Schema.optionalKey(Schema.Array(Schema.Union([Schema.String, Schema.Number]))),
  msg: Schema.String
})))

/** Short, single-line, printable ASCII: safe in an SMTP reply and a log line. */
export const shortReason = (text: string, max = 200): string => {
  const clean = text.replace(/[^\x20-\x7e]+/g, " ").replace(/\s+/g, " ").trim()
  return clean.length > max ? `${clean.slice(0, max - 3)}...` : clean
}

/** A reason as text: a string, or the first three of FastAPI's list as `loc: msg`. */
const reasonText = (value: unknown): string =>
  Predicate.isString(value) ? value : Option.match(decodeDetailList(value), {
    onNone: () => "",
    onSome: (list) =>
      list.slice(0, 3).map((d) => {
        const loc = (d.loc ?? []).filter((l) => l !== "body").join(".")
        return loc === "" ? d.msg : `${loc}: ${d.msg}`
      }).join("; ")
  })

/**
 * The reason a JSON error body gives, shortened: its `detail`, else its `message`, else its `error`
 * (each a string or FastAPI's list); `fallback` when it gives none.
 */
export const errorReason = (body: string, fallback: string): string => {
  const json = Option.getOrUndefined(decodeJson(body))
  for (const key of ["detail", "message", "error"] as const) {
    if (!Predicate.hasProperty(json, key)) continue
    const reason = shortReason(reasonText(json[key]))
    if (reason !== "") return reason
  }
  return fallback
}

/** `Retry-After` as delay-seconds or an HTTP date, in milliseconds from `now`. */
export const retryAfterMillis = (header: string | undefined, now: number): number | undefined => {
  if (header === undefined) return undefined
  const value = header.trim()
  if (/^\d+$/.test(value)) return Number(value) * 1000
  return Option.match(DateTime.make(value), {
    onNone: () => undefined,
    onSome: (date) => Math.max(0, DateTime.toEpochMillis(date) - now)
  })
}

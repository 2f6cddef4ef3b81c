/**
 * Reading an email API's HTTP answer, for both HTTP upstreams (`http` and `cakemail`): the reason an
 * error body gives, made safe for an SMTP reply and a log line, and the Retry-After header. Pure
 * functions; no status mapping (each upstream owns its own).
 */
import { DateTime, Option, Predicate, Schema } from "effect"

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

/**
 * The JSON of a message that carries attachments, for an upstream call's body or the outbox's
 * `<id>.json`: the text `JSON.stringify` would give if every attachment content in the value (a
 * Uint8Array, or a `ReceivedBase64`) were its base64 string, without ever holding that text. Bytes are
 * base64-encoded slice by slice as the socket (or the file) takes them, and base64 as received is copied
 * out of the message slice by slice, without its line breaks; a 25 MB message no longer becomes a base64
 * copy, a JSON string and its UTF-8 bytes (three more copies) at once.
 */
import { Stream } from "effect"
import { HttpBody } from "effect/http"
import { type AttachmentContent, ReceivedBase64 } from "../domain/Message.ts"

/** Bytes of one slice of an attachment: a multiple of 3, so the base64 of consecutive slices joins up. */
const sliceBytes = 48 * 1024

/** Up to this size a body is sent as one buffer (no stream to run): every message without large attachments. */
export const streamFromBytes = 256 * 1024

type Segment = string | AttachmentContent

const isContent = (v: unknown): v is AttachmentContent => v instanceof Uint8Array || v instanceof ReceivedBase64

const base64Length = (content: AttachmentContent) =>
  content instanceof ReceivedBase64 ? content.length : 4 * Math.ceil(content.byteLength / 3)

const hasBytes = (v: unknown): boolean =>
  isContent(v) ||
  (typeof v === "object" && v !== null && (Array.isArray(v) ? v : Object.values(v)).some(hasBytes))

/**
 * The value as JSON text pieces and raw attachment bytes, in order; the same rules as JSON.stringify
 * for plain data (object keys in insertion order, `undefined` and functions left out of objects and
 * written as `null` in arrays), and its layout when `indent` is given (as `JSON.stringify(v, null, indent)`).
 * What holds no bytes is written by JSON.stringify itself.
 */
const segmentsOf = (value: unknown, indent: number): Array<Segment> => {
  const segments: Array<Segment> = []
  let text = ""
  // JSON.stringify's layout for an indent: a line break and the depth's padding before each item
  const lineAt = (depth: number) => indent === 0 ? "" : "\n" + " ".repeat(indent * depth)
  const colon = indent === 0 ? ":" : ": "
  const plain = (v: unknown, depth: number) =>
    (JSON.stringify(v, null, indent) ?? "null").replaceAll("\n", lineAt(depth)) // a JSON string has no raw line break
  const write = (v: unknown, depth: number): void => {
    if (isContent(v)) {
      segments.push(text + "\"", v)
      text = "\""
    } else if (!hasBytes(v)) {
      text += plain(v, depth)
    } else if (Array.isArray(v)) {
      text += "["
      v.forEach((item, i) => {
        text += (i > 0 ? "," : "") + lineAt(depth + 1)
        if (item === undefined || typeof item === "function") text += "null"
        else write(item, depth + 1)
      })
      text += lineAt(depth) + "]"
    } else if (typeof v === "object" && v !== null) {
      text += "{"
      let first = true
      for (const [key, item] of Object.entries(v)) {
        if (item === undefined || typeof item === "function") continue
        text += `${first ? "" : ","}${lineAt(depth + 1)}${JSON.stringify(key)}${colon}`
        first = false
        write(item, depth + 1)
      }
      text += lineAt(depth) + "}"
    } else {
      text += plain(v, depth)
    }
  }
  write(value, 0)
  segments.push(text)
  return segments
}

/** The byte chunks of the segments: text as UTF-8, attachments as base64 in slices. */
function* chunksOf(segments: ReadonlyArray<Segment>): Generator<Uint8Array> {
  for (const segment of segments) {
    if (typeof segment === "string") {
      if (segment !== "") yield Buffer.from(segment, "utf8")
      continue
    }
    if (segment instanceof ReceivedBase64) {
      yield* segment.slices(sliceBytes)
      continue
    }
    const bytes = Buffer.from(segment.buffer, segment.byteOffset, segment.byteLength)
    for (let at = 0; at < bytes.length; at += sliceBytes) {
      yield Buffer.from(bytes.subarray(at, at + sliceBytes).toString("base64"), "latin1")
    }
  }
}

export interface JsonBody {
  readonly byteLength: number
  /** The body's bytes, made afresh each time (a retry sends it again). */
  readonly chunks: () => Iterable<Uint8Array>
}

/** `indent`: lay the text out as `JSON.stringify(value, null, indent)` does (0: compact, for the wire). */
export const jsonBody = (value: unknown, indent = 0): JsonBody => {
  const segments = segmentsOf(value, indent)
  const byteLength = segments.reduce(
    (n, s) => n + (typeof s === "string" ? Buffer.byteLength(s, "utf8") : base64Length(s)),
    0
  )
  return { byteLength, chunks: () => chunksOf(segments) }
}

/** An HTTP body: one buffer when small, else a stream the client writes as the socket drains. */
export const toHttpBody = (value: unknown): HttpBody.HttpBody => {
  if (!hasBytes(value)) return HttpBody.uint8Array(Buffer.from(JSON.stringify(value) ?? "null", "utf8"), "application/json")
  const body = jsonBody(value)
  if (body.byteLength <= streamFromBytes) {
    return HttpBody.uint8Array(Buffer.concat([...body.chunks()], body.byteLength), "application/json")
  }
  // one slice per pull (Stream.fromIterable would gather up to 4,096 of them, the whole body, at once)
  return HttpBody.stream(
    Stream.suspend(() => Stream.fromIterable(body.chunks(), { chunkSize: 1 })),
    "application/json",
    body.byteLength
  )
}

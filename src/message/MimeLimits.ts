/**
 * MIME limits checked in one linear pass over the raw message, before mailparser sees it: line
 * length, header section size and field count (of the message and of every part), number of MIME
 * parts and nesting depth (multipart, and message/rfc822 sent unencoded). It refuses; it never
 * truncates or repairs. The same pass notes where the base64 bodies of attachment parts lie, so the
 * parse worker can pass them on undecoded (ParseWorker.ts). Pure: bytes in, the first violation (if any)
 * or those places out.
 */
import type { Duration } from "effect"

export interface MimeLimitOptions {
  readonly maxParts: number
  readonly maxDepth: number
  readonly maxHeaderBytes: number
  readonly maxHeaders: number
  readonly maxLineLength: number
}

/** The MIME limits at their defaults (MIME_MAX_* in README's configuration table). */
export const defaultMimeLimits: MimeLimitOptions = {
  maxParts: 1000,
  maxDepth: 10,
  maxHeaderBytes: 131_072,
  maxHeaders: 500,
  maxLineLength: 65_536
}

/** PARSE_TIMEOUT's default. A type import only: parse workers load this module, and not effect. */
export const defaultParseTimeout: Duration.Input = "10 seconds"

/** The first limit the message breaks; `reason` is what the client reads after `554 5.6.0`. */
export interface MimeViolation {
  readonly limit: "parts" | "depth" | "header-size" | "headers" | "line-length"
  readonly reason: string
}

/** Where the body of a part lies in the message: `start` inclusive, `end` exclusive. */
export interface BodyRange {
  readonly start: number
  readonly end: number
}

/** The outcome of the pass: the first limit broken, or none and the base64 attachment bodies. */
export type MimeScan =
  | { readonly violation: MimeViolation }
  | { readonly violation: undefined; readonly base64Bodies: ReadonlyArray<BodyRange> }

interface Entity {
  /** 1 for the message itself, 2 for its parts, ... */
  readonly depth: number
  headerBytes: number
  headers: number
  /** The unfolded Content-Type and Content-Transfer-Encoding fields, as far as read. */
  contentType: string
  transferEncoding: string
  field: "content-type" | "content-transfer-encoding" | "other"
}

const newEntity = (depth: number): Entity => ({
  depth,
  headerBytes: 0,
  headers: 0,
  contentType: "",
  transferEncoding: "",
  field: "other"
})

const boundaryOf = (contentType: string): string | undefined => {
  if (!/^\s*multipart\//i.test(contentType)) return undefined
  const match = /;\s*boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;"]{1,200}))/i.exec(contentType)
  return match === null ? undefined : (match[1] ?? match[2])
}

const isUnencodedMessage = (entity: Entity) =>
  /^\s*message\/(rfc822|global)\b/i.test(entity.contentType) &&
  /^\s*(7bit|8bit|binary)?\s*$/i.test(entity.transferEncoding)

/**
 * A part whose body is base64 and which mailparser always makes an attachment: one of any type but
 * the text it shows (text/plain, text/html), multipart and message. A part without Content-Type is
 * text/plain.
 */
const isBase64Attachment = (entity: Entity) =>
  /^\s*base64\s*$/i.test(entity.transferEncoding) &&
  /^\s*[a-z0-9!#$&^_.+-]+\//i.test(entity.contentType) &&
  !/^\s*(text\/(plain|html)\s*(;|$)|multipart\/|message\/)/i.test(entity.contentType)

/**
 * Scans `raw` (CRLF line endings): the first violation, or, within every limit, where the base64
 * bodies of attachment parts inside a multipart lie (each ends before the line break in front of the
 * boundary that follows it; a body the message ends inside is not noted).
 */
export const scanMime = (raw: Uint8Array, limits: MimeLimitOptions): MimeScan => {
  const violation = (found: MimeViolation): MimeScan => ({ violation: found })
  const bytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
  /** The open multiparts, innermost last: their boundaries and depths. */
  const multiparts: Array<{ readonly boundary: Buffer; readonly depth: number }> = []
  let entity: Entity | undefined = newEntity(1)
  let parts = 1
  const base64Bodies: Array<BodyRange> = []
  /** Where the body of the current part starts, when it is a base64 attachment. */
  let base64Start: number | undefined = undefined
  /**
   * The depth of the unencoded message/rfc822 part the pass is inside, if any: mailparser makes it one
   * attachment, its parts included, so none of them is noted. A boundary of a multipart above it ends it.
   */
  let embeddedAt: number | undefined = undefined

  const startEntity = (depth: number): MimeViolation | undefined => {
    parts++
    if (parts > limits.maxParts) return { limit: "parts", reason: `more than ${limits.maxParts} MIME parts` }
    if (depth > limits.maxDepth) return { limit: "depth", reason: `MIME parts nested deeper than ${limits.maxDepth} levels` }
    entity = newEntity(depth)
    return undefined
  }

  let start = 0
  while (start < bytes.length) {
    let end = bytes.indexOf(0x0a, start)
    if (end < 0) end = bytes.length
    const lineEnd = end > start && bytes[end - 1] === 0x0d ? end - 1 : end
    const length = lineEnd - start
    if (length > limits.maxLineLength) {
      return violation({ limit: "line-length", reason: `a line is longer than ${limits.maxLineLength} bytes` })
    }
    const next = end + 1

    if (entity !== undefined) {
      // in a header section
      entity.headerBytes += next - start
      if (entity.headerBytes > limits.maxHeaderBytes) {
        return violation({ limit: "header-size", reason: `a header section is larger than ${limits.maxHeaderBytes} bytes` })
      }
      if (length === 0) {
        const ended: Entity = entity
        entity = undefined
        const boundary = boundaryOf(ended.contentType)
        if (boundary !== undefined) {
          if (ended.depth + 1 > limits.maxDepth) {
            return violation({ limit: "depth", reason: `MIME parts nested deeper than ${limits.maxDepth} levels` })
          }
          multiparts.push({ boundary: Buffer.from(`--${boundary}`, "latin1"), depth: ended.depth })
        } else if (isUnencodedMessage(ended)) {
          embeddedAt ??= ended.depth + 1
          const broken = startEntity(ended.depth + 1)
          if (broken !== undefined) return violation(broken)
        } else if (multiparts.length > 0 && embeddedAt === undefined && isBase64Attachment(ended)) {
          base64Start = next
        }
      } else {
        const first = bytes[start]
        if (first === 0x20 || first === 0x09) {
          const text = bytes.toString("latin1", start, lineEnd)
          if (entity.field === "content-type") entity.contentType += text
          else if (entity.field === "content-transfer-encoding") entity.transferEncoding += text
        } else {
          entity.headers++
          if (entity.headers > limits.maxHeaders) {
            return violation({ limit: "headers", reason: `a header section has more than ${limits.maxHeaders} fields` })
          }
          // the colon of this line only: a search to the end of the message would make the pass quadratic
          const found = bytes.subarray(start, lineEnd).indexOf(0x3a)
          const colon = found < 0 ? -1 : start + found
          const name = colon > start && colon < lineEnd ? bytes.toString("latin1", start, colon).trim().toLowerCase() : ""
          entity.field = name === "content-type" || name === "content-transfer-encoding" ? name : "other"
          const value = colon > start && colon < lineEnd ? bytes.toString("latin1", colon + 1, lineEnd) : ""
          if (entity.field === "content-type") entity.contentType = value
          else if (entity.field === "content-transfer-encoding") entity.transferEncoding = value
        }
      }
    } else if (length >= 2 && bytes[start] === 0x2d && bytes[start + 1] === 0x2d && multiparts.length > 0) {
      // a body line that may be a boundary of an open multipart (an outer one closes the inner ones)
      for (let m = multiparts.length - 1; m >= 0; m--) {
        const { boundary, depth } = multiparts[m]!
        if (length < boundary.length || bytes.compare(boundary, 0, boundary.length, start, start + boundary.length) !== 0) continue
        const rest = bytes.toString("latin1", start + boundary.length, lineEnd)
        const closing = /^--\s*$/.test(rest)
        if (!closing && !/^\s*$/.test(rest)) continue
        if (base64Start !== undefined) {
          // the line break in front of a boundary belongs to the boundary (RFC 2046 §5.1.1)
          const end = bytes[start - 2] === 0x0d ? start - 2 : start - 1
          base64Bodies.push({ start: base64Start, end: Math.max(base64Start, end) })
          base64Start = undefined
        }
        if (embeddedAt !== undefined && depth < embeddedAt) embeddedAt = undefined
        if (closing) {
          multiparts.length = m // the closing delimiter: back to the epilogue of the parent
        } else {
          multiparts.length = m + 1
          const broken = startEntity(depth + 1)
          if (broken !== undefined) return violation(broken)
        }
        break
      }
    }
    start = next
  }
  return { violation: undefined, base64Bodies }
}

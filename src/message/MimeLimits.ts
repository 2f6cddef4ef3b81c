/**
 * MIME limits checked in one linear pass over the raw message, before mailparser sees it: line
 * length, header section size and field count (of the message and of every part), number of MIME
 * parts and nesting depth (multipart, and message/rfc822 sent unencoded). It refuses; it never
 * truncates or repairs. Pure: bytes in, the first violation (if any) out.
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

/** Scans `raw` (CRLF line endings) and returns the first violation, or `undefined` when within every limit. */
export const checkMimeLimits = (raw: Uint8Array, limits: MimeLimitOptions): MimeViolation | undefined => {
  const bytes = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
  /** The open multiparts, innermost last: their boundaries and depths. */
  const multiparts: Array<{ readonly boundary: Buffer; readonly depth: number }> = []
  let entity: Entity | undefined = newEntity(1)
  let parts = 1

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
      return { limit: "line-length", reason: `a line is longer than ${limits.maxLineLength} bytes` }
    }
    const next = end + 1

    if (entity !== undefined) {
      // in a header section
      entity.headerBytes += next - start
      if (entity.headerBytes > limits.maxHeaderBytes) {
        return { limit: "header-size", reason: `a header section is larger than ${limits.maxHeaderBytes} bytes` }
      }
      if (length === 0) {
        const ended: Entity = entity
        entity = undefined
        const boundary = boundaryOf(ended.contentType)
        if (boundary !== undefined) {
          if (ended.depth + 1 > limits.maxDepth) {
            return { limit: "depth", reason: `MIME parts nested deeper than ${limits.maxDepth} levels` }
          }
          multiparts.push({ boundary: Buffer.from(`--${boundary}`, "latin1"), depth: ended.depth })
        } else if (isUnencodedMessage(ended)) {
          const violation = startEntity(ended.depth + 1)
          if (violation !== undefined) return violation
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
            return { limit: "headers", reason: `a header section has more than ${limits.maxHeaders} fields` }
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
        if (/^--\s*$/.test(rest)) {
          multiparts.length = m // the closing delimiter: back to the epilogue of the parent
        } else if (/^\s*$/.test(rest)) {
          multiparts.length = m + 1
          const violation = startEntity(depth + 1)
          if (violation !== undefined) return violation
        } else {
          continue
        }
        break
      }
    }
    start = next
  }
  return undefined
}

/**
 * The parse worker: runs in a `worker_threads` thread (Parser.ts keeps a pool of them), so a hostile
 * message costs that thread's time, never the event loop's. Per job: MIME limits first
 * (MimeLimits.ts), then mailparser's streaming MailParser, which reads every header and part but does
 * not decode the plain base64 bodies of attachments: those travel on as the text they arrived as
 * (`parseMail`). Imported by Parser.ts for types only.
 */
import * as crypto from "node:crypto"
import { isMainThread, parentPort, workerData } from "node:worker_threads"
import {
  type AttachmentStream,
  type Headers,
  MailParser
} from "mailparser"
import type { ParsedAttachment } from "../domain/Message.ts"
import { type BodyRange, type MimeLimitOptions, scanMime } from "./MimeLimits.ts"

/** `workerData.role` of a parse worker (anything else imports this module for its types). */
export const workerRole = "smtp-gateway/message/ParseWorker"

/** Where a plain, canonical base64 body lies in the message, and its decoded size. */
export interface PlainBase64 {
  readonly start: number
  readonly end: number
  readonly size: number
}

/** An attachment as the worker hands it over: its bytes, or where its base64 text lies in the message. */
export interface WorkerAttachment extends Omit<ParsedAttachment, "content"> {
  readonly content: Uint8Array | PlainBase64
}

/** What one run of mailparser over a message yields. */
export interface MailParts {
  readonly headers: Headers
  readonly text: string | null
  readonly html: string | null
  readonly attachments: ReadonlyArray<WorkerAttachment>
}

export interface ParseJob {
  readonly id: number
  readonly bytes: Uint8Array
  /** `undefined` skips the MIME limits (a header-only message built by the parser itself). */
  readonly limits: MimeLimitOptions | undefined
}

export type ParseOutcome =
  | { readonly _tag: "Parsed"; readonly parts: MailParts }
  | { readonly _tag: "Refused"; readonly reason: string }
  | { readonly _tag: "Unparseable" }

export interface ParseResult {
  readonly id: number
  readonly outcome: ParseOutcome
}

const isAttachment = (u: unknown): u is AttachmentStream =>
  typeof u === "object" && u !== null && (u as { type?: unknown }).type === "attachment"
const isText = (u: unknown): u is { readonly type: "text"; readonly text?: unknown; readonly html?: unknown } =>
  typeof u === "object" && u !== null && (u as { type?: unknown }).type === "text"

const toAttachment = (data: AttachmentStream, content: Uint8Array | PlainBase64): WorkerAttachment => {
  const contentId = typeof data.cid === "string" && data.cid !== "" ? data.cid : null
  const inline = data.related === true || data.contentDisposition === "inline"
  return {
    filename: typeof data.filename === "string" && data.filename !== "" ? data.filename : null,
    contentType: data.contentType,
    size: content instanceof Uint8Array ? content.length : content.size,
    contentId,
    disposition: inline && contentId !== null ? "inline" : "attachment",
    content
  }
}

/** Up to this size an attachment's bytes are copied into a buffer of their own, which reserves nothing more. */
const ownBufferBelow = 64 * 1024

/**
 * An attachment's bytes, copied in as mailparser decodes them into memory reserved for the most they
 * could be: a resizable ArrayBuffer reserves address space only, and the OS backs the pages written.
 * Each decoded chunk is garbage once copied; collecting the chunks and concatenating them at the end
 * held a large attachment twice, and its chunks until the worker next collected (measured with
 * `npm run bench -- --only=large-25mb`: the worker's buffers peaked near 40 MB for 18 MB of attachments).
 */
export const contentCollector = (bound: number) => {
  let buffer = new ArrayBuffer(0, { maxByteLength: bound })
  let length = 0
  return {
    add: (chunk: Uint8Array): void => {
      const end = length + chunk.byteLength
      if (end <= buffer.maxByteLength) {
        buffer.resize(end)
      } else {
        // past the bound (no transfer encoding decodes to more bytes than it takes, so never expected)
        const larger = new ArrayBuffer(end, { maxByteLength: 2 * end })
        new Uint8Array(larger).set(new Uint8Array(buffer, 0, length))
        buffer = larger
      }
      new Uint8Array(buffer, length).set(chunk)
      length = end
    },
    /** The bytes, in a buffer of exactly their length (transferable as a whole). */
    done: (): Uint8Array => new Uint8Array(length < ownBufferBelow ? buffer.slice(0, length) : buffer)
  }
}

/** The ArrayBuffers of a result that move to the main thread instead of being copied (attachment contents). */
const transferablesOf = (outcome: ParseOutcome): Array<ArrayBuffer> =>
  outcome._tag === "Parsed"
    ? outcome.parts.attachments.flatMap(({ content }) =>
      content instanceof Uint8Array && content.buffer instanceof ArrayBuffer && content.byteOffset === 0 &&
        content.byteLength === content.buffer.byteLength
        ? [content.buffer]
        : []
    )
    : []

/** How much of a message mailparser is given at a time. */
const feedSliceBytes = 64 * 1024

/**
 * Runs mailparser's streaming MailParser over `bytes`; the first error of any stream rejects the message.
 * `contentOf` may give an attachment another content than the bytes mailparser decoded (see `parseMail`).
 */
const readMail = (
  bytes: Uint8Array,
  contentOf: (decoded: Uint8Array) => Uint8Array | PlainBase64 = (decoded) => decoded
): Promise<MailParts> =>
  new Promise((resolve, reject) => {
    const parser = new MailParser({ skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true })
    let settled = false
    let headers: Headers = new Map()
    let text: string | null = null
    let html: string | null = null
    const attachments: Array<WorkerAttachment> = []
    /** Bounds what the attachments still to come decode to: no encoding gives more bytes than it takes. */
    let undecoded = bytes.byteLength
    const fail = (error: unknown) => {
      if (settled) return
      settled = true
      parser.destroy()
      reject(error)
    }

    // Pull objects off the parser; an attachment's content is read to its end (and released)
    // before the next object, as mailparser requires.
    let reading = false
    const read = (): void => {
      reading = true
      for (let data: unknown = parser.read(); data !== null; data = parser.read()) {
        if (isText(data)) {
          if (typeof data.text === "string" && data.text !== "") text = data.text
          if (typeof data.html === "string" && data.html !== "") html = data.html
        } else if (isAttachment(data)) {
          const attachment = data
          // its content lies in what is left of the message after the attachments before it
          const content = contentCollector(undecoded)
          attachment.content.on("data", content.add)
          attachment.content.once("error", fail)
          attachment.content.once("end", () => {
            const decoded = content.done()
            undecoded = Math.max(0, undecoded - decoded.byteLength)
            attachments.push(toAttachment(attachment, contentOf(decoded)))
            attachment.release()
            read()
          })
          return
        }
      }
      reading = false
    }

    parser.on("headers", (parsed: Headers) => {
      headers = parsed
    })
    parser.on("readable", () => {
      if (!reading) read()
    })
    parser.once("error", fail)
    parser.once("end", () => {
      if (settled) return
      settled = true
      resolve({ headers, text, html, attachments })
    })
    // fed in slices, each after mailparser has taken the last: all at once, a large message would be
    // split and decoded far ahead of the reader, and held in stream buffers several times over
    const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    let offset = 0
    const feed = (): void => {
      while (offset < input.length && !settled) {
        const end = Math.min(offset + feedSliceBytes, input.length)
        const more = parser.write(input.subarray(offset, end))
        offset = end
        if (!more) {
          parser.once("drain", feed)
          return
        }
      }
      if (!settled) parser.end()
    }
    feed()
  })

// ---- plain base64 bodies, passed on as text ------------------------------------------------------------

/** The value of each base64 character; -1 for CR (of a CRLF), -2 for `=`, -3 for anything else. */
const base64Value = new Int8Array(256).fill(-3)
Array.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/").forEach((c, i) => {
  base64Value[c.charCodeAt(0)] = i
})
base64Value[0x0d] = -1
base64Value[0x3d] = -2

/**
 * The body at `range` when it is plain, canonical base64: only the alphabet and CRLF line breaks, its
 * one or two `=` at the very end, a multiple of 4 characters in all, and no bits set past the last byte
 * (what mail programs write; its text without line breaks is then exactly the base64 of its bytes).
 * Else `undefined`, and mailparser decodes it, with the leniency it has for anything else.
 */
export const plainBase64 = (raw: Uint8Array, { end, start }: BodyRange): PlainBase64 | undefined => {
  let chars = 0
  let padding = 0
  let last = 0
  for (let i = start; i < end; i++) {
    const value = base64Value[raw[i]!]!
    if (value >= 0 && padding === 0) {
      last = value
    } else if (value === -2 && padding < 2) {
      padding++
    } else if (value === -1 && i + 1 < end && raw[i + 1] === 0x0a) {
      i++ // a CRLF
      continue
    } else {
      return undefined
    }
    chars++
  }
  if ((chars & 3) !== 0 || (padding === 1 && (last & 0x03) !== 0) || (padding === 2 && (last & 0x0f) !== 0)) {
    return undefined
  }
  return { start, end, size: (chars / 4) * 3 - padding }
}

/** Bytes in a stand-in: a random tag of the parse and the body's index. */
const tagBytes = 12

/**
 * The message with each plain base64 body replaced by a stand-in: the base64 of a tag made for this
 * parse and the body's index. An attachment whose content mailparser reads back as a stand-in is
 * exactly that body, whatever mailparser made of the structure around it.
 */
const withStandIns = (raw: Uint8Array, bodies: ReadonlyArray<PlainBase64>) => {
  const source = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength)
  const tag = crypto.randomBytes(tagBytes)
  const pieces: Array<Uint8Array> = []
  let at = 0
  bodies.forEach(({ end, start }, index) => {
    const standIn = Buffer.alloc(tagBytes + 4)
    tag.copy(standIn)
    standIn.writeUInt32BE(index, tagBytes)
    pieces.push(source.subarray(at, start), Buffer.from(standIn.toString("base64"), "latin1"))
    at = end
  })
  pieces.push(source.subarray(at))
  return {
    message: new Uint8Array(Buffer.concat(pieces)),
    /** The index of the body `content` stands in for; `undefined` when it is no stand-in. */
    indexOf: (content: Uint8Array): number | undefined =>
      content.byteLength === tagBytes + 4 && tag.equals(content.subarray(0, tagBytes))
        ? Buffer.from(content.buffer, content.byteOffset + tagBytes, 4).readUInt32BE(0)
        : undefined
  }
}

/**
 * mailparser over `bytes`, except that the plain base64 bodies among `base64Bodies` (MimeLimits.ts
 * finds them) are not decoded: such an attachment's content is where its text lies in the message
 * (`PlainBase64`), which goes on to the email API as that text. mailparser would decode it in chunks of
 * ~48 KB that outlive the young generation and stay in memory until a full collection, splitting the
 * body line by line on the way, and the bytes would be encoded again for the API. mailparser reads the
 * message with stand-ins for those bodies; should it not give back every stand-in as one attachment's
 * content, exactly once (or fail), the message is read again as it is, entirely by mailparser.
 */
export const parseMail = async (bytes: Uint8Array, base64Bodies: ReadonlyArray<BodyRange> = []): Promise<MailParts> => {
  const plain = base64Bodies.flatMap((range) => plainBase64(bytes, range) ?? [])
  if (plain.length === 0) return readMail(bytes)
  const standIns = withStandIns(bytes, plain)
  const seen = new Array<boolean>(plain.length).fill(false)
  let agrees = true
  const parts = await readMail(standIns.message, (decoded) => {
    const index = standIns.indexOf(decoded)
    if (index === undefined || !agrees) return decoded
    if (index >= plain.length || seen[index]) {
      agrees = false
      return decoded
    }
    seen[index] = true
    return plain[index]!
  }).catch(() => undefined)
  return parts !== undefined && agrees && seen.every(Boolean) ? parts : readMail(bytes)
}

const runJob = async (job: ParseJob): Promise<ParseOutcome> => {
  const scan = job.limits === undefined ? undefined : scanMime(job.bytes, job.limits)
  if (scan?.violation !== undefined) return { _tag: "Refused", reason: scan.violation.reason }
  try {
    return { _tag: "Parsed", parts: await parseMail(job.bytes, scan?.base64Bodies) }
  } catch {
    return { _tag: "Unparseable" }
  }
}

if (!isMainThread && parentPort !== null && (workerData as { role?: unknown } | null)?.role === workerRole) {
  const port = parentPort
  port.on("message", (job: ParseJob) => {
    void runJob(job).then((outcome) =>
      port.postMessage({ id: job.id, outcome } satisfies ParseResult, transferablesOf(outcome))
    )
  })
  port.postMessage({ ready: true })
}

/**
 * The parse worker: runs in a `worker_threads` thread (Parser.ts keeps a pool of them), so a hostile
 * message costs that thread's time, never the event loop's. Per job: MIME limits first
 * (MimeLimits.ts), then mailparser's streaming MailParser. Imported by Parser.ts for types only.
 */
import { isMainThread, parentPort, workerData } from "node:worker_threads"
import {
  type AttachmentStream,
  type Headers,
  MailParser
} from "mailparser"
import type { ParsedAttachment } from "../domain/Message.ts"
import { checkMimeLimits, type MimeLimitOptions } from "./MimeLimits.ts"

/** `workerData.role` of a parse worker (anything else imports this module for its types). */
export const workerRole = "smtp-gateway/message/ParseWorker"

/** What one run of mailparser over a message yields. */
export interface MailParts {
  readonly headers: Headers
  readonly text: string | null
  readonly html: string | null
  readonly attachments: ReadonlyArray<ParsedAttachment>
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

const toAttachment = (data: AttachmentStream, content: Uint8Array): ParsedAttachment => {
  const contentId = typeof data.cid === "string" && data.cid !== "" ? data.cid : null
  const inline = data.related === true || data.contentDisposition === "inline"
  return {
    filename: typeof data.filename === "string" && data.filename !== "" ? data.filename : null,
    contentType: data.contentType,
    size: content.length,
    contentId,
    disposition: inline && contentId !== null ? "inline" : "attachment",
    content
  }
}

/**
 * `bytes` as a Uint8Array that alone owns its ArrayBuffer, so it can be transferred to the main thread
 * instead of copied: a large Buffer.concat result already does (no copy); a small one shares Node's
 * buffer pool, and is copied out of it (a clone would otherwise carry the whole pool).
 */
const ownedBytes = (bytes: Buffer): Uint8Array =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? new Uint8Array(bytes.buffer, 0, bytes.byteLength)
    : new Uint8Array(bytes)

/** The ArrayBuffers of a result that move to the main thread instead of being copied (attachment contents). */
const transferablesOf = (outcome: ParseOutcome): Array<ArrayBuffer> =>
  outcome._tag === "Parsed"
    ? outcome.parts.attachments.flatMap(({ content }) =>
      content.buffer instanceof ArrayBuffer && content.byteOffset === 0 && content.byteLength === content.buffer.byteLength
        ? [content.buffer]
        : []
    )
    : []

/** How much of a message mailparser is given at a time. */
const feedSliceBytes = 64 * 1024

/** Runs mailparser's streaming MailParser over `bytes`; the first error of any stream rejects the message. */
export const parseMail = (bytes: Uint8Array): Promise<MailParts> =>
  new Promise((resolve, reject) => {
    const parser = new MailParser({ skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true })
    let settled = false
    let headers: Headers = new Map()
    let text: string | null = null
    let html: string | null = null
    const attachments: Array<ParsedAttachment> = []
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
          const chunks: Array<Buffer> = []
          attachment.content.on("data", (chunk: Buffer) => chunks.push(chunk))
          attachment.content.once("error", fail)
          attachment.content.once("end", () => {
            attachments.push(toAttachment(attachment, ownedBytes(Buffer.concat(chunks))))
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

const runJob = async (job: ParseJob): Promise<ParseOutcome> => {
  if (job.limits !== undefined) {
    const violation = checkMimeLimits(job.bytes, job.limits)
    if (violation !== undefined) return { _tag: "Refused", reason: violation.reason }
  }
  try {
    return { _tag: "Parsed", parts: await parseMail(job.bytes) }
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

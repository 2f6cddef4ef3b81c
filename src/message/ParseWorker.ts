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
            const bytes = content.done()
            undecoded = Math.max(0, undecoded - bytes.byteLength)
            attachments.push(toAttachment(attachment, bytes))
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

/**
 * Parser: mailparser behind an Effect. ReceivedMessage bytes in, ParsedMessage out; an unparseable
 * message is a MessageRejected (554 5.6.0). The only module that imports mailparser. It reads; it
 * decides nothing about what a message may contain (message/Validator.ts does).
 */
import { Context, DateTime, Duration, Effect, Layer, Predicate, Result } from "effect"
import {
  type AddressObject,
  type AttachmentStream,
  type EmailAddress,
  type HeaderValue,
  type Headers,
  MailParser
} from "mailparser"
import { MessageRejected } from "../domain/Errors.ts"
import type { AddressRef, ParsedAttachment, ParsedMessage, ReceivedMessage } from "../domain/Message.ts"
import { type RawField, splitHeaderSection } from "./Transform.ts"

const unparseable = () => new MessageRejected({ reason: "the message could not be parsed" })

/** What one run of mailparser over a message yields. */
interface MailParts {
  readonly headers: Headers
  readonly text: string | null
  readonly html: string | null
  readonly attachments: ReadonlyArray<ParsedAttachment>
}

const isAttachment = (u: unknown): u is AttachmentStream => Predicate.hasProperty(u, "type") && u.type === "attachment"
const isText = (u: unknown): u is { readonly type: "text"; readonly text?: unknown; readonly html?: unknown } =>
  Predicate.hasProperty(u, "type") && u.type === "text"

const toAttachment = (data: AttachmentStream, content: Uint8Array): ParsedAttachment => {
  const contentId = Predicate.isString(data.cid) && data.cid !== "" ? data.cid : null
  const inline = data.related === true || data.contentDisposition === "inline"
  return {
    filename: Predicate.isString(data.filename) && data.filename !== "" ? data.filename : null,
    contentType: data.contentType,
    size: content.length,
    contentId,
    disposition: inline && contentId !== null ? "inline" : "attachment",
    content
  }
}

/** Runs mailparser's streaming MailParser over `bytes`; the first error of any stream rejects the message. */
const runMailParser = (bytes: Uint8Array): Effect.Effect<MailParts, MessageRejected> =>
  Effect.callback<MailParts, MessageRejected>((resume) => {
    const parser = new MailParser({ skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true })
    let settled = false
    let headers: Headers = new Map()
    let text: string | null = null
    let html: string | null = null
    const attachments: Array<ParsedAttachment> = []
    const fail = () => {
      if (settled) return
      settled = true
      parser.destroy()
      resume(Effect.fail(unparseable()))
    }

    // Pull objects off the parser; an attachment's content is read to its end (and released)
    // before the next object, as mailparser requires.
    let reading = false
    const read = (): void => {
      reading = true
      for (let data: unknown = parser.read(); data !== null; data = parser.read()) {
        if (isText(data)) {
          if (Predicate.isString(data.text) && data.text !== "") text = data.text
          if (Predicate.isString(data.html) && data.html !== "") html = data.html
        } else if (isAttachment(data)) {
          const attachment = data
          const chunks: Array<Buffer> = []
          attachment.content.on("data", (chunk: Buffer) => chunks.push(chunk))
          attachment.content.once("error", fail)
          attachment.content.once("end", () => {
            attachments.push(toAttachment(attachment, new Uint8Array(Buffer.concat(chunks))))
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
      resume(Effect.succeed({ headers, text, html, attachments }))
    })
    parser.end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
    return Effect.sync(() => {
      settled = true
      parser.destroy()
    })
  })

const isAddressObject = (u: unknown): u is AddressObject => Predicate.hasProperty(u, "value") && Array.isArray(u.value)

const flatten = (addresses: ReadonlyArray<EmailAddress>): Array<AddressRef> =>
  addresses.flatMap((entry) =>
    entry.group !== undefined
      ? flatten(entry.group)
      : Predicate.isString(entry.address) && entry.address !== ""
      ? [{ address: entry.address, name: entry.name.trim() === "" ? null : entry.name.trim() }]
      : []
  )

/** The addresses of an address header value: one AddressObject, or one per header line. */
const addressesOf = (value: HeaderValue | undefined): Array<AddressRef> =>
  (Array.isArray(value) ? value : [value]).flatMap((entry: unknown) => isAddressObject(entry) ? flatten(entry.value) : [])

const stringOf = (value: HeaderValue | undefined): string | null =>
  Predicate.isString(value) && value !== "" ? value : null

const stringsOf = (value: HeaderValue | undefined): Array<string> =>
  (Array.isArray(value) ? value : [value]).filter((entry: unknown): entry is string => Predicate.isString(entry) && entry !== "")

const named = (name: string) => (field: RawField) => field.name.toLowerCase() === name

// RFC 5322 date: comments dropped; a date without a zone is read as UTC rather than local time.
const isoDate = (value: string): string | null => {
  const bare = value.replace(/\([^)]*\)/g, " ").trim()
  const millis = Date.parse(/(?:[+-]\d{4}|[A-Za-z]{1,5})$/.test(bare) ? bare : `${bare} +0000`)
  return Number.isNaN(millis) ? null : DateTime.formatIso(DateTime.makeUnsafe(millis))
}

const CRLF = new Uint8Array([0x0d, 0x0a])
const TO = new Uint8Array([0x54, 0x6f, 0x3a]) // "To:"

/**
 * Every address of several From fields. mailparser keeps only the last From, so the fields are
 * parsed again as To fields (which it keeps, all of them) of a message that is only a header section.
 */
const allFromAddresses = Effect.fnUntraced(function*(fields: ReadonlyArray<RawField>) {
  const parts = fields.flatMap((field) => {
    const value = field.raw.subarray(field.raw.indexOf(0x3a) + 1)
    return [TO, value, ...(value[value.length - 1] === 0x0a ? [] : [CRLF])]
  })
  const mail = yield* runMailParser(Buffer.concat([...parts, CRLF]))
  return addressesOf(mail.headers.get("to"))
})

const makeParse = (timeout: Duration.Input) =>
  Effect.fn("Parser.parse")(
    function*(message: ReceivedMessage): Effect.fn.Return<ParsedMessage, MessageRejected> {
      const section = splitHeaderSection(message.raw)
      if (Result.isFailure(section)) return yield* new MessageRejected({ reason: section.failure })
      const fields = section.success.fields
      const mail = yield* runMailParser(message.raw)
      const fromFields = fields.filter(named("from"))
      const dateField = fields.find(named("date"))
      return {
        messageId: stringOf(mail.headers.get("message-id")),
        date: dateField === undefined ? null : isoDate(dateField.value),
        from: fromFields.length > 1 ? yield* allFromAddresses(fromFields) : addressesOf(mail.headers.get("from")),
        replyTo: addressesOf(mail.headers.get("reply-to")),
        to: addressesOf(mail.headers.get("to")),
        cc: addressesOf(mail.headers.get("cc")),
        subject: stringOf(mail.headers.get("subject")),
        text: mail.text,
        html: mail.html,
        headers: fields.filter((field) => !named("bcc")(field)).map(({ name, value }) => ({ name, value })),
        attachments: mail.attachments,
        inReplyTo: stringOf(mail.headers.get("in-reply-to")),
        references: stringsOf(mail.headers.get("references"))
      }
    },
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.fail(new MessageRejected({ reason: "the message could not be parsed in time" }))
    })
  )

export class Parser extends Context.Service<Parser, {
  readonly parse: (message: ReceivedMessage) => Effect.Effect<ParsedMessage, MessageRejected>
}>()("smtp-gateway/message/Parser") {
  /** `timeout` bounds one parse, so no message can hang a session. */
  static readonly layerWith = (options: { readonly timeout: Duration.Input }) =>
    Layer.succeed(Parser, Parser.of({ parse: makeParse(options.timeout) }))

  static readonly layer = Parser.layerWith({ timeout: Duration.seconds(10) })
}

/**
 * The `cakemail` upstream: one `POST /v2/emails` per recipient (Delivery fans out), mapped from the
 * canonical message: subject, UTF-8 text/html, the confirmed sender (From or `x-sender-id`), the relay
 * headers of Cakemail's own SMTP service (type, list, tags, tracking), other headers and attachments
 * within what the API can carry. No retries, no token renewal here: Delivery and the Authenticator do those.
 */
import { Effect, Layer, Option, Result } from "effect"
import { CakemailSenders } from "../auth/CakemailAuth.ts"
import { type AttachmentType, CakemailApi, type EmailRequest, type TokenRefused } from "../cakemail/CakemailApi.ts"
import { GatewayConfig } from "../Config.ts"
import type { CanonicalMessage } from "../domain/Message.ts"
import type { SendersUnavailable } from "../policy/Senders.ts"
import { shortReason } from "./HttpReply.ts"
import { metered, type Outbound, Upstream, UpstreamError } from "./Upstream.ts"

export interface CakemailUpstreamOptions {
  /** `content.type` when no `x-email-api-type` header says otherwise (CAKEMAIL_EMAIL_TYPE). */
  readonly emailType: "transactional" | "marketing"
  /** Drop attachments the API cannot carry (and inline images) instead of refusing the message. */
  readonly dropUnsupportedParts: boolean
}

type Attachment = CanonicalMessage["attachments"][number]
type Header = CanonicalMessage["headers"][number]

// ---- attachments ----------------------------------------------------------------------------------

const extensionOf: Record<AttachmentType, string> = {
  csv: "csv",
  doc: "doc",
  docx: "docx",
  calendar: "ics",
  jpeg: "jpeg",
  pdf: "pdf",
  png: "png",
  xls: "xls",
  xlsx: "xlsx"
}

const typeOfMime: Record<string, AttachmentType> = {
  "text/csv": "csv",
  "application/csv": "csv",
  "text/comma-separated-values": "csv",
  "application/msword": "doc",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
  "text/calendar": "calendar",
  "application/ics": "calendar",
  "image/jpeg": "jpeg",
  "image/jpg": "jpeg",
  "image/pjpeg": "jpeg",
  "application/pdf": "pdf",
  "image/png": "png",
  "application/vnd.ms-excel": "xls",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx"
}

const typeOfExtension: Record<string, AttachmentType> = {
  csv: "csv",
  doc: "doc",
  docx: "docx",
  ics: "calendar",
  jpg: "jpeg",
  jpeg: "jpeg",
  pdf: "pdf",
  png: "png",
  xls: "xls",
  xlsx: "xlsx"
}

/** Types that say nothing about the content: the file name's extension decides. */
const genericMimes = new Set(["application/octet-stream", "application/x-octet-stream", "binary/octet-stream", ""])

/** The API's file name rule. */
export const attachmentNamePattern = /^[a-zA-Z0-9-_]+\.(csv|doc|docx|ics|jpeg|pdf|png|xls|xlsx)$/

const splitName = (filename: string | null): { readonly base: string; readonly extension: string } => {
  const name = (filename ?? "").split(/[\\/]/).pop() ?? ""
  const dot = name.lastIndexOf(".")
  return dot > 0 ? { base: name.slice(0, dot), extension: name.slice(dot + 1).toLowerCase() } : { base: name, extension: "" }
}

/** A file name the API accepts: accents dropped, other characters → `-`, the extension the type's. */
export const sanitizeAttachmentName = (filename: string | null, type: AttachmentType, index: number): string => {
  const base = splitName(filename).base
    .normalize("NFKD")
    .replace(/\p{M}+/gu, "")
    .replace(/[^a-zA-Z0-9_-]+/g, "-")
    .replace(/-{2,}/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 100)
  return `${base === "" ? `attachment-${index + 1}` : base}.${extensionOf[type]}`
}

/** How the part is named in a refusal: its file name (made printable) or its position. */
const partName = (attachment: Attachment, index: number): string =>
  attachment.filename === null || attachment.filename.trim() === ""
    ? `part ${index + 1} (${shortReason(attachment.content_type, 60)})`
    : `"${shortReason(attachment.filename, 60)}" (${shortReason(attachment.content_type, 60)})`

/** The API's type for this part, or None when the API cannot carry it. */
const attachmentType = (attachment: Attachment): Option.Option<AttachmentType> => {
  const mime = attachment.content_type.split(";")[0]?.trim().toLowerCase() ?? ""
  const byMime = typeOfMime[mime]
  if (byMime !== undefined) return Option.some(byMime)
  if (!genericMimes.has(mime)) return Option.none()
  return Option.fromNullishOr(typeOfExtension[splitName(attachment.filename).extension])
}

/** The attachments as the API takes them, or the reason the message cannot be sent through it. */
export const mapAttachments = (
  attachments: ReadonlyArray<Attachment>,
  dropUnsupported: boolean
): Result.Result<NonNullable<EmailRequest["attachment"]>, string> => {
  const mapped: Array<NonNullable<EmailRequest["attachment"]>[number]> = []
  for (const [index, attachment] of attachments.entries()) {
    if (attachment.disposition === "inline" && attachment.content_id !== null) {
      if (dropUnsupported) continue
      return Result.fail(`inline image ${partName(attachment, index)} cannot be carried by the email API`)
    }
    const type = attachmentType(attachment)
    if (Option.isNone(type)) {
      if (dropUnsupported) continue
      return Result.fail(
        `attachment ${partName(attachment, index)} is of a type the email API cannot carry ` +
          "(it takes csv, doc, docx, ics, jpeg, pdf, png, xls, xlsx)"
      )
    }
    mapped.push({
      filename: sanitizeAttachmentName(attachment.filename, type.value, index),
      type: type.value,
      content: attachment.content_base64
    })
  }
  return Result.succeed(mapped)
}

// ---- headers ----------------------------------------------------------------------------------------

/**
 * Headers of Cakemail's own SMTP relay: they set fields of the request and are not forwarded
 * (`x-track-opens` and `x-track-clicks` too: `isForwarded` drops every `x-track-*`).
 */
const relayHeaders = new Set(["x-sender-id", "x-list-id", "x-email-api-type", "x-tags"])

/** Headers the API writes itself, or that describe this hop's MIME structure or transport. */
const ownHeaders = new Set([
  "from",
  "to",
  "bcc",
  "subject",
  "date",
  "message-id",
  "sender",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "content-disposition",
  "content-id",
  "content-description",
  "received",
  "return-path",
  "delivered-to",
  "dkim-signature",
  "domainkey-signature",
  "authentication-results",
  "received-spf"
])

const isForwarded = (name: string): boolean => {
  const lower = name.toLowerCase()
  return !relayHeaders.has(lower) && !ownHeaders.has(lower) && !lower.startsWith("x-track-") && !lower.startsWith("arc-")
}

const headerValue = (headers: ReadonlyArray<Header>, name: string): Option.Option<string> =>
  Option.fromNullishOr(headers.find((h) => h.name.toLowerCase() === name)?.value.trim())

const parseFlag = (name: string, value: string): Result.Result<boolean, string> => {
  const lower = value.toLowerCase()
  if (["true", "yes", "1", "on"].includes(lower)) return Result.succeed(true)
  if (["false", "no", "0", "off"].includes(lower)) return Result.succeed(false)
  return Result.fail(`${name} must be true or false`)
}

// ---- the request ------------------------------------------------------------------------------------

/** Everything of the request but the sender id, or the reason the API cannot take the message. */
interface EmailDraft {
  readonly request: (recipient: string, senderId: string) => EmailRequest
  /** The `x-sender-id` header, when the message names its sender that way. */
  readonly senderId: Option.Option<string>
}

const draftEmail = (
  message: CanonicalMessage,
  options: CakemailUpstreamOptions
): Result.Result<EmailDraft, string> => {
  const subject = (message.subject ?? "").trim()
  if (subject === "") return Result.fail("the email API requires a subject")
  const text = message.text !== null && message.text !== "" ? message.text : undefined
  const html = message.html !== null && message.html !== "" ? message.html : undefined
  if (text === undefined && html === undefined) return Result.fail("the email API requires a text or HTML body")

  const header = (name: string) => headerValue(message.headers, name)

  let type = options.emailType
  const typeHeader = Option.map(header("x-email-api-type"), (t) => t.toLowerCase())
  if (Option.isSome(typeHeader)) {
    if (typeHeader.value !== "transactional" && typeHeader.value !== "marketing") {
      return Result.fail("x-email-api-type must be transactional or marketing")
    }
    type = typeHeader.value
  }

  const listId = header("x-list-id")
  if (Option.isSome(listId) && !/^\d{1,15}$/.test(listId.value)) return Result.fail("x-list-id must be a number")

  const tags = Option.map(header("x-tags"), (value) => [
    ...new Set(value.split(",").map((t) => t.trim()).filter((t) => t !== ""))
  ])

  // Transactional mail is not tracked unless a header asks; marketing mail keeps the API's defaults.
  const trackingDefault = type === "transactional" ? false : undefined
  const flags: Array<boolean | undefined> = []
  for (const name of ["x-track-opens", "x-track-clicks"]) {
    const value = header(name)
    if (Option.isNone(value)) {
      flags.push(trackingDefault)
      continue
    }
    const parsed = parseFlag(name, value.value)
    if (Result.isFailure(parsed)) return Result.fail(parsed.failure)
    flags.push(parsed.success)
  }
  const [opens, clicks] = flags
  const tracking: EmailRequest["tracking"] | undefined = opens === undefined && clicks === undefined
    ? undefined
    : {
      ...(opens === undefined ? {} : { opens }),
      ...(clicks === undefined ? {} : { clicks_html: clicks, clicks_text: clicks })
    }

  const attachments = mapAttachments(message.attachments, options.dropUnsupportedParts)
  if (Result.isFailure(attachments)) return Result.fail(attachments.failure)

  const additional = message.headers
    .filter((h) => isForwarded(h.name))
    .map((h) => ({ name: h.name, value: h.value.replace(/[\r\n]+/g, " ") }))
  const senderName = (message.from.name ?? "").trim()

  return Result.succeed({
    senderId: header("x-sender-id"),
    request: (recipient, senderId) => ({
      email: recipient,
      sender: senderName === "" ? { id: senderId } : { id: senderId, name: senderName },
      content: {
        subject,
        ...(html === undefined ? {} : { html }),
        ...(text === undefined ? {} : { text }),
        encoding: "utf-8",
        type
      },
      ...(Option.isSome(listId) ? { list_id: Number(listId.value) } : {}),
      ...(Option.isSome(tags) && tags.value.length > 0 ? { tags: tags.value } : {}),
      ...(tracking === undefined ? {} : { tracking }),
      ...(additional.length > 0 ? { additional_headers: additional } : {}),
      ...(attachments.success.length > 0 ? { attachment: attachments.success } : {})
    })
  })
}

// ---- the upstream -----------------------------------------------------------------------------------

const rejected = (detail: string) => new UpstreamError({ kind: "Rejected", detail })

const makeCakemailUpstream = Effect.fnUntraced(function*(options: CakemailUpstreamOptions) {
  const api = yield* CakemailApi
  const senders = yield* CakemailSenders
  // Delivery hands every call for one message (each recipient, each retry) the same message object:
  // its draft is made once, and goes with the message
  const drafts = new WeakMap<CanonicalMessage, Result.Result<EmailDraft, string>>()
  const draftOf = (message: CanonicalMessage): Result.Result<EmailDraft, string> => {
    let draft = drafts.get(message)
    if (draft === undefined) {
      draft = draftEmail(message, options)
      drafts.set(message, draft)
    }
    return draft
  }

  const submit = Effect.fnUntraced(function*(outbound: Outbound) {
    const recipient = outbound.recipients[0]
    if (recipient === undefined || outbound.recipients.length !== 1) {
      return yield* Effect.die(`the cakemail upstream takes one recipient per call, got ${outbound.recipients.length}`)
    }
    const token = outbound.principal.apiKey
    if (Option.isNone(token)) {
      return yield* new UpstreamError({ kind: "Unauthorized", detail: "this login has no Cakemail token" })
    }
    const draft = draftOf(outbound.message)
    if (Result.isFailure(draft)) return yield* rejected(draft.failure)

    const unavailable = (error: SendersUnavailable | TokenRefused) =>
      error._tag === "TokenRefused"
        ? new UpstreamError({ kind: "Unauthorized", detail: "the senders API refused the token", status: error.status })
        : new UpstreamError({ kind: "Temporary", detail: error.detail })
    const sender = yield* Option.match(draft.success.senderId, {
      onSome: (id) =>
        senders.findById(outbound.principal, id).pipe(
          Effect.mapError(unavailable),
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(rejected(`x-sender-id ${shortReason(id, 40)} is not a confirmed sender of this account`)),
            onSome: Effect.succeed
          }))
        ),
      onNone: () =>
        senders.find(outbound.principal, outbound.message.from.address).pipe(
          Effect.mapError(unavailable),
          Effect.flatMap(Option.match({
            onNone: () => Effect.fail(rejected("the From address is not a confirmed sender of this account")),
            onSome: Effect.succeed
          }))
        )
    })

    const submitted = yield* metered(api.submitEmail(
      token.value,
      draft.success.request(recipient, sender.id),
      outbound.idempotencyKey
    ))
    yield* Effect.annotateCurrentSpan({ "cakemail.email_id": submitted.id, "cakemail.status": submitted.status })
    if (submitted.status === "rejected" || submitted.status === "error") {
      return yield* rejected(`the email API answered status ${submitted.status} (email ${shortReason(submitted.id, 60)})`)
    }
    return { upstreamId: submitted.id }
  })

  return Upstream.of({ name: "cakemail", perRecipient: true, submit })
})

/** UPSTREAM=cakemail: CAKEMAIL_EMAIL_TYPE and CAKEMAIL_UNSUPPORTED_PARTS from GatewayConfig. */
export const layerCakemailUpstream: Layer.Layer<Upstream, never, GatewayConfig | CakemailApi | CakemailSenders> =
  Layer.effect(
    Upstream,
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      const emailType = config.cakemail.emailType === "marketing" ? "marketing" : "transactional"
      return yield* makeCakemailUpstream({ emailType, dropUnsupportedParts: config.cakemail.unsupportedParts === "drop" })
    })
  )

export const layerCakemailUpstreamWith = (
  options: CakemailUpstreamOptions
): Layer.Layer<Upstream, never, CakemailApi | CakemailSenders> => Layer.effect(Upstream, makeCakemailUpstream(options))

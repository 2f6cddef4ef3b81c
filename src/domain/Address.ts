/**
 * Mail addresses as the gateway handles them after decoding: a `Mailbox` is a syntactically valid
 * RFC 5321 path (with RFC 6531 UTF-8 allowed), and `SenderRule`s say which mailboxes a principal may
 * send as. Decoded once, at the edge (smtp/Hook.ts); nothing downstream handles a raw string address.
 */
import { Schema } from "effect"

// dot-atom local part (RFC 5322 atext plus any non-ASCII for SMTPUTF8), or a quoted string
const atext = String.raw`[A-Za-z0-9!#$%&'*+\/=?^_\x60{|}~\-\u0080-\uFFFF]`
const dotAtom = `${atext}+(?:\\.${atext}+)*`
const quoted = String.raw`"(?:[\x20\x21\x23-\x5B\x5D-\x7E\u0080-\uFFFF]|\\[\x20-\x7E])*"`
const label = String.raw`(?:[A-Za-z0-9\u0080-\uFFFF](?:[A-Za-z0-9\-\u0080-\uFFFF]{0,61}[A-Za-z0-9\u0080-\uFFFF])?)`
const hostname = `${label}(?:\\.${label})+`
const addressLiteral = String.raw`\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]`
const mailboxPattern = new RegExp(`^(?:${dotAtom}|${quoted})@(?:${hostname}|${addressLiteral})$`, "u")

const fitsLengths = Schema.makeFilter<string>((address) => {
  const at = address.lastIndexOf("@")
  if (at > 64) return "the local part is longer than 64 characters"
  if (address.length - at - 1 > 255) return "the domain is longer than 255 characters"
  return undefined
})

/** A forward path (RCPT TO) or non-null reverse path (MAIL FROM): `local@domain`. */
export const Mailbox = Schema.String.check(
  Schema.isMaxLength(254),
  Schema.isPattern(mailboxPattern, { message: "must be an address like local@example.com" }),
  fitsLengths
).pipe(Schema.brand("Mailbox"))
export type Mailbox = typeof Mailbox.Type

export const decodeMailbox = Schema.decodeUnknownOption(Mailbox)

/** The domain of a mailbox (what follows its last `@`), lower-cased. */
export const domainOf = (mailbox: string): string => mailbox.slice(mailbox.lastIndexOf("@") + 1).toLowerCase()

/**
 * What a principal may send as: an exact address (`alice@example.com`) or a whole domain
 * (`@example.com`). Compared case-insensitively.
 */
export const SenderRule = Schema.String.check(
  Schema.isPattern(/^(?:[^\s@]+@[^\s@]+\.[^\s@]+|@[^\s@]+\.[^\s@]+)$/, {
    message: "must be an address (alice@example.com) or a domain (@example.com)"
  })
)
export type SenderRule = typeof SenderRule.Type

export const senderAllowed = (rules: ReadonlyArray<SenderRule>, address: string): boolean => {
  const lower = address.toLowerCase()
  const domain = "@" + domainOf(address)
  return rules.some((rule) => {
    const r = rule.toLowerCase()
    return r.startsWith("@") ? r === domain : r === lower
  })
}

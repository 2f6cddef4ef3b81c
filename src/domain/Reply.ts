/**
 * The one table of SMTP replies the gateway sends (design.md §3). Every refusal, every success and
 * every failure reaches the client through a `Reply` built here; nothing else writes reply text.
 * Pure data: no services, no IO.
 */
import { Data, Predicate } from "effect"

export class Reply extends Data.Class<{
  /** The three-digit SMTP code. */
  readonly code: number
  /** The RFC 3463 enhanced status code, such as `5.7.1`. */
  readonly enhanced: string
  readonly text: string
}> {
  get isPermanent(): boolean {
    return this.code >= 500
  }
  get isTemporary(): boolean {
    return this.code >= 400 && this.code < 500
  }
  /** Closing replies (421) end the connection after they are sent. */
  get closesConnection(): boolean {
    return this.code === 421
  }
  /** The reply as one line on the wire, without CRLF. */
  override toString(): string {
    return `${this.code} ${this.enhanced} ${this.text}`
  }
}

const reply = (code: number, enhanced: string, text: string) => new Reply({ code, enhanced, text })

/** An error (or anything) that knows the reply it earns. */
export interface Respondable {
  readonly reply: Reply
}

export const isRespondable = (u: unknown): u is Respondable =>
  Predicate.hasProperty(u, "reply") && u.reply instanceof Reply

export const Replies = {
  /** QUIT's reply in design's table: smtp-server writes its 221 itself, so the gateway never sends this. */
  bye: reply(221, "2.0.0", "Bye"),

  tlsRequired: reply(530, "5.7.0", "Must issue a STARTTLS command first"),
  authRequired: reply(530, "5.7.0", "Authentication required"),
  authSucceeded: reply(235, "2.7.0", "Authentication successful"),
  authInvalid: reply(535, "5.7.8", "Authentication credentials invalid"),
  /** A refusal whose text says more than the standard one (an MFA account, say). */
  authInvalidBecause: (why: string) => reply(535, "5.7.8", `Authentication credentials invalid: ${why}`),
  authUnavailable: reply(454, "4.7.0", "Temporary authentication failure, try again later"),
  authLockedOut: reply(421, "4.7.0", "Too many failed authentication attempts, try again later"),

  senderOk: reply(250, "2.1.0", "Sender ok"),
  recipientOk: reply(250, "2.1.5", "Recipient ok"),
  senderNotAllowed: reply(550, "5.7.1", "Sender address not allowed for this account"),
  badAddress: reply(501, "5.1.3", "Bad address syntax"),
  tooManyRecipients: reply(452, "4.5.3", "Too many recipients"),
  messageTooLarge: (limit: number) => reply(552, "5.3.4", `Message size exceeds the limit of ${limit} bytes`),
  messageRejected: (reason: string) => reply(554, "5.6.0", `Message rejected: ${reason}`),
  /** RFC 1870 §6.2, RFC 3463 X.3.1: MAX_MESSAGE_MEMORY is taken by other messages now; the client retries. */
  insufficientStorage: reply(452, "4.3.1", "Insufficient system storage, try again later"),

  rateLimited: (seconds: number) =>
    reply(451, "4.7.1", `Rate limit exceeded, try again in ${Math.max(1, Math.ceil(seconds))} seconds`),
  tooManyConnections: reply(421, "4.7.0", "Too many connections, try again later"),
  idleTimeout: reply(421, "4.4.2", "Idle timeout, closing connection"),
  shuttingDown: reply(421, "4.3.2", "Service shutting down"),

  upstreamTemporary: reply(451, "4.3.0", "Temporary delivery failure, try again later"),
  upstreamTimeout: reply(451, "4.4.1", "Temporary delivery failure (timeout), try again later"),
  upstreamSenderRefused: reply(550, "5.7.1", "Sender or account refused by the email API"),
  upstreamTooLarge: reply(552, "5.3.4", "Message size exceeds the limit of the email API"),
  upstreamRejected: (reason: string) => reply(554, "5.6.0", `Message rejected by the email API: ${reason}`),

  accepted: (gatewayId: string) => reply(250, "2.0.0", `Ok: queued as ${gatewayId}`),
  /** Some recipients were refused for good after others were accepted (design.md §2). */
  acceptedPartially: (gatewayId: string, refused: ReadonlyArray<string>) =>
    reply(250, "2.0.0", `Ok: queued as ${gatewayId}; refused by the email API: ${refused.join(", ")}`),
  internalError: reply(451, "4.3.0", "Internal error, try again later"),

  // ---- abuse protection and protocol hardening (issue 4) ----
  /** MAX_MESSAGES_PER_SESSION transactions on one connection: the client reconnects to go on. */
  tooManyMessages: reply(421, "4.7.0", "Too many messages in one session, reconnect to send more"),
  /** SESSION_MAX_LIFETIME reached. */
  sessionExpired: reply(421, "4.4.2", "Session lifetime exceeded, closing connection"),
  /** Fewer than DATA_MIN_RATE bytes per second during DATA. */
  dataTooSlow: reply(421, "4.4.2", "Data rate too low, closing connection"),
  /** A command sent before the greeting (pregreet talker). */
  talkedTooSoon: reply(421, "4.7.0", "Command sent before the greeting, closing connection"),
  /** An HTTP request line on the SMTP port (cross-protocol attack). */
  httpRefused: reply(421, "4.7.0", "HTTP requests are not accepted here, closing connection"),
  /** A command line over the limit (RFC 4954 allows 12288 octets for AUTH). */
  lineTooLong: reply(421, "4.5.2", "Line too long, closing connection"),
  /** Too many unknown, invalid or unauthenticated commands on one connection. */
  tooManyErrors: reply(421, "4.7.0", "Too many errors, closing connection"),
  /** A command out of sequence: STARTTLS twice, AUTH twice, AUTH inside a transaction (RFC 5321, RFC 4954). */
  badSequence: (text: string) => reply(503, "5.5.1", text),
  /** RFC 4954 §4: a response that is not base64 (`501 5.5.2`). */
  authMalformed: reply(501, "5.5.2", "Cannot decode the base64 response"),
  /** RFC 4954 §4: the client cancelled the exchange with `*` (`501 5.7.0`). */
  authCancelled: reply(501, "5.7.0", "Authentication cancelled"),
  /** RFC 3463 X.1.2 (bad destination system): an address literal as recipient. */
  recipientAddressLiteral: reply(550, "5.1.2", "Address literals are not accepted as recipients"),
  /** RFC 3463 X.1.2 (bad destination system): localhost or a single-label local name. */
  recipientLocalDomain: reply(550, "5.1.2", "Local domains are not accepted as recipients"),
  /** RFC 3463 X.1.3 (bad destination mailbox address syntax): %-hack or UUCP bang path routing. */
  recipientRouting: reply(550, "5.1.3", "Routing characters (% or !) are not accepted in recipients")
} as const

/**
 * What each smtp-server callback does, inside its session: AUTH (lockouts, credentials, the cached
 * Authenticator), MAIL and RCPT (address decoding, EnvelopePolicy), DATA (the capped body, the data-rate
 * watchdog, Submission) and TLS up. Each runs through Hook.ts; the Session it reads is in Session.ts.
 */
import * as tls from "node:tls"
import { Duration, Effect, Exit, Metric, Option, Redacted, Ref, Schema } from "effect"
import type { SMTPServerAddress, SMTPServerAuthentication } from "smtp-server"
import { Authenticator } from "../auth/Authenticator.ts"
import { AuthError, InvalidCredentials } from "../auth/CredentialStore.ts"
import { GatewayConfig } from "../Config.ts"
import { decodeMailbox, type Mailbox } from "../domain/Address.ts"
import { type BodyType, Envelope, type TlsInfo } from "../domain/Envelope.ts"
import { BadAddress } from "../domain/Errors.ts"
import { type AuthMethod, Credentials } from "../domain/Principal.ts"
import { Replies, type Reply } from "../domain/Reply.ts"
import { authFailures, bareLineEndings, emailsReceived } from "../observability/Metrics.ts"
import { EnvelopePolicy } from "../policy/EnvelopePolicy.ts"
import { AuthLockedOut, Limits } from "../policy/Limits.ts"
import { Submission } from "../Submission.ts"
import { type DataStream, readBody } from "./Body.ts"
import { refusalOf } from "./Hook.ts"
import { type InsufficientStorage, MessageMemory } from "./MessageMemory.ts"
import { Session, type SessionState } from "./Session.ts"

/** MAIL, RCPT or DATA without a successful AUTH (smtp-server normally answers this itself). */
export class NotAuthenticated extends Schema.TaggedError<NotAuthenticated>()("NotAuthenticated", {}) {
  get reply() {
    return Replies.authRequired
  }
}

/** MAX_MESSAGES_PER_SESSION transactions begun: `421 4.7.0`, the client reconnects to go on. */
export class TooManyMessages extends Schema.TaggedError<TooManyMessages>()("TooManyMessages", {
  limit: Schema.Int
}) {
  get reply() {
    return Replies.tooManyMessages
  }
}

/** Fewer than DATA_MIN_RATE bytes per second over a DATA_RATE_WINDOW: `421 4.4.2`, connection closed. */
export class DataTooSlow extends Schema.TaggedError<DataTooSlow>()("DataTooSlow", {
  bytes: Schema.Number
}) {
  get reply() {
    return Replies.dataTooSlow
  }
}

/** AUTH failures allowed on one connection; the last one is answered `421 4.7.0` and closes it. */
const maxAuthFailuresPerConnection = 3

// ---- hooks: what each smtp-server callback does, inside its session ---------------------------

/**
 * Sets `smtp.reply.code` on the hook's span from how the hook ended: `success` for a value (or the
 * reply it carries), the error's own reply for a refusal, `451` for a defect. Interruption sets none.
 */
const annotateReply = <A>(success: (value: A) => number) =>
<E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.onExit(effect, (exit) => {
    if (Exit.isSuccess(exit)) return Effect.annotateCurrentSpan({ "smtp.reply.code": success(exit.value) })
    if (Exit.hasInterrupts(exit)) return Effect.void
    const code = Option.getOrElse(refusalOf(exit.cause), () => Replies.internalError).code
    return Effect.annotateCurrentSpan({ "smtp.reply.code": code })
  })

/** The `reason` label of `smtp_auth_failures_total`. */
type AuthFailureReason = "invalid_credentials" | "backend_unavailable" | "malformed"

// one metric update per reason, made once (not one withAttributes per failure)
const authFailuresBy: Record<AuthFailureReason, Effect.Effect<void>> = {
  invalid_credentials: Metric.update(Metric.withAttributes(authFailures, { reason: "invalid_credentials" }), 1),
  backend_unavailable: Metric.update(Metric.withAttributes(authFailures, { reason: "backend_unavailable" }), 1),
  malformed: Metric.update(Metric.withAttributes(authFailures, { reason: "malformed" }), 1)
}
const recordAuthFailure = (reason: AuthFailureReason) => authFailuresBy[reason]

const refuseAuth = (reason: AuthFailureReason, error: AuthError) =>
  Effect.gen(function*() {
    yield* recordAuthFailure(reason)
    yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": reason })
    yield* Effect.logInfo("authentication failed").pipe(Effect.annotateLogs({ reason, reply: error.reply.toString() }))
    return yield* error
  })

/**
 * A failed AUTH (bad or malformed credentials): counted for the connection and, in Limits, for the
 * IP+username and the IP; answered after a delay that grows with that pair's failures (the same for
 * an unknown user and a wrong password); `421 4.7.0` and close, instead of `535`, once the connection
 * used its last try or the failure blocked the pair or the IP.
 */
const failAuth = (reason: Exclude<AuthFailureReason, "backend_unavailable">, username: string, error: AuthError) =>
  Effect.gen(function*() {
    const session = yield* Session
    const limits = yield* Limits
    const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, authFailures: s.authFailures + 1 }))
    const outcome = yield* limits.recordAuthFailure(session.remoteAddress, username)
    yield* Effect.sleep(outcome.delay)
    if (!outcome.blocked && state.authFailures < maxAuthFailuresPerConnection) return yield* refuseAuth(reason, error)
    yield* recordAuthFailure(reason)
    yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": "locked_out" })
    yield* Effect.logInfo("authentication failed; closing the connection").pipe(
      Effect.annotateLogs({ reason, failures: state.authFailures, blocked: outcome.blocked })
    )
    return yield* new AuthLockedOut({ scope: outcome.blocked ? "pair" : "connection" })
  })

/**
 * SASL PLAIN or LOGIN into Credentials. `None` for an empty user or password, a PLAIN authorization
 * identity other than the authentication identity, or another mechanism.
 */
const decodeCredentials = (auth: SMTPServerAuthentication): Option.Option<Credentials> => {
  const method: AuthMethod | undefined = auth.method === "PLAIN" || auth.method === "LOGIN" ? auth.method : undefined
  const password = auth.password ?? ""
  if (method === undefined || password === "") return Option.none()
  const username = method === "PLAIN" ? auth.authcid ?? "" : auth.username ?? ""
  const authzid = method === "PLAIN" ? auth.authzid ?? "" : ""
  if (username === "" || (authzid !== "" && authzid !== username)) return Option.none()
  return Option.some(
    new Credentials({
      username,
      password: Redacted.make(password),
      authzid: authzid === "" ? Option.none() : Option.some(authzid),
      method
    })
  )
}

/**
 * AUTH: refused at once (`421 4.7.0`) while the IP or IP+username is blocked; credentials checked
 * here for shape, then by the Authenticator; failures go through `failAuth`.
 */
export const authenticate = Effect.fnUntraced(function*(auth: SMTPServerAuthentication) {
  const session = yield* Session
  const authenticator = yield* Authenticator
  const limits = yield* Limits
  yield* session.annotate({ "smtp.auth.mechanism": auth.method })
  yield* Effect.annotateCurrentSpan({ "smtp.auth.mechanism": auth.method })
  const username = auth.username ?? ""
  yield* limits.checkAuth(session.remoteAddress, username)
  const credentials = decodeCredentials(auth)
  if (Option.isNone(credentials)) {
    return yield* failAuth("malformed", username, new AuthError({ reason: new InvalidCredentials({}) }))
  }
  const principal = yield* authenticator.verify(credentials.value).pipe(
    Effect.catchTag("AuthError", (error) =>
      error.reason._tag === "InvalidCredentials"
        ? failAuth("invalid_credentials", credentials.value.username, error)
        : refuseAuth("backend_unavailable", error))
  )
  yield* Ref.update(session.state, (state) => ({
    ...state,
    principal: Option.some(principal),
    credentials: credentials
  }))
  yield* session.annotate({ "smtp.auth.user": principal.username })
  yield* Effect.annotateCurrentSpan({ "smtp.auth.outcome": "success", "smtp.auth.user": principal.username })
  yield* Effect.logDebug("authenticated").pipe(Effect.annotateLogs({ user: principal.username, mechanism: auth.method }))
  return principal
}, annotateReply(() => Replies.authSucceeded.code), Effect.withSpan("smtp.auth"))

const principalOf = (state: SessionState) =>
  Option.match(state.principal, {
    onNone: () => Effect.fail(new NotAuthenticated()),
    onSome: Effect.succeed
  })

const mailboxOf = (address: string): Effect.Effect<Mailbox, BadAddress> =>
  Option.match(decodeMailbox(address), {
    onNone: () => Effect.fail(new BadAddress({ address })),
    onSome: Effect.succeed
  })

/**
 * The BODY= of MAIL (smtp-server has checked its syntax, and refused a declared SIZE= over the limit
 * before this hook runs).
 */
const bodyTypeOf = (args: SMTPServerAddress["args"]): BodyType => {
  const body = args === false ? undefined : args.BODY
  return typeof body === "string" && body.toUpperCase() === "8BITMIME" ? "8BITMIME" : "7BIT"
}

/** The SIZE= of MAIL, when declared (smtp-server has checked it is a number within the limit). */
const declaredSizeOf = (args: SMTPServerAddress["args"]): number | undefined => {
  const size = args === false ? undefined : Number(args.SIZE)
  return size !== undefined && Number.isSafeInteger(size) && size > 0 ? size : undefined
}

const logMemoryFull = (error: InsufficientStorage) =>
  Effect.logWarning("MAX_MESSAGE_MEMORY is taken by other messages; the client is asked to retry").pipe(
    Effect.annotateLogs({ needed: error.needed, held: error.held, limit: error.limit })
  )

const logRefusal = (command: string) => (error: { readonly reply: Reply }) =>
  Effect.logInfo(`${command} refused`).pipe(Effect.annotateLogs({ reply: error.reply.toString() }))

/** MAIL FROM: starts a new transaction (smtp-server has no RSET hook, so each MAIL starts afresh). */
export const mailFrom = Effect.fnUntraced(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const memory = yield* MessageMemory
    const { limits } = yield* GatewayConfig
    const state = yield* Ref.updateAndGet(session.state, (s) => ({
      ...s,
      envelope: Option.none(),
      transactions: s.transactions + 1
    }))
    const principal = yield* principalOf(state)
    if (state.transactions > limits.maxMessagesPerSession) {
      return yield* new TooManyMessages({ limit: limits.maxMessagesPerSession })
    }
    const sender = yield* mailboxOf(address.address)
    yield* policy.checkSender(principal, sender)
    const declared = declaredSizeOf(address.args)
    if (declared !== undefined) yield* memory.checkFree(declared).pipe(Effect.tapError(logMemoryFull))
    yield* policy.checkRate(session.remoteAddress, principal)
    const envelope = new Envelope({ mailFrom: sender, rcptTo: [], bodyType: bodyTypeOf(address.args) })
    yield* Ref.update(session.state, (s) => ({ ...s, envelope: Option.some(envelope) }))
  },
  Effect.tapError(logRefusal("MAIL")),
  annotateReply(() => Replies.senderOk.code),
  Effect.withSpan("smtp.mail")
)

/** RCPT TO: adds a recipient to the transaction; a repeated one is accepted once. */
export const rcptTo = Effect.fnUntraced(
  function*(address: SMTPServerAddress) {
    const session = yield* Session
    const policy = yield* EnvelopePolicy
    const state = yield* Ref.get(session.state)
    yield* principalOf(state) // NotAuthenticated before any recipient check
    yield* policy.checkRecipientAddress(address.address)
    const recipient = yield* mailboxOf(address.address)
    if (Option.isNone(state.envelope)) return yield* Effect.die("RCPT without a transaction")
    const envelope = state.envelope.value
    if (envelope.rcptTo.some((r) => r.toLowerCase() === recipient.toLowerCase())) return
    yield* policy.checkRecipientCount(envelope)
    yield* Ref.update(session.state, (s) => ({
      ...s,
      envelope: Option.map(s.envelope, (e) => new Envelope({ ...e, rcptTo: [...e.rcptTo, recipient] }))
    }))
  },
  Effect.tapError(logRefusal("RCPT")),
  annotateReply(() => Replies.recipientOk.code),
  Effect.withSpan("smtp.rcpt")
)

/**
 * Fails with DataTooSlow when fewer than DATA_MIN_RATE bytes per second arrived over a window;
 * `byteLength` is smtp-server's running count of the bytes received for this message. Never ends
 * otherwise (it runs beside the body read, which wins when the final dot comes).
 */
const dataRateWatchdog = (stream: DataStream) =>
  Effect.gen(function*() {
    const { limits } = yield* GatewayConfig
    if (limits.dataMinRate <= 0) return yield* Effect.never
    const needed = limits.dataMinRate * Duration.toSeconds(limits.dataRateWindow)
    let last = 0
    while (true) {
      yield* Effect.sleep(limits.dataRateWindow)
      const now = stream.byteLength ?? 0
      if (now - last < needed) return yield* new DataTooSlow({ bytes: now - last })
      last = now
    }
  })

/** DATA: reads the body (size-capped, rate-checked), submits it and answers with Submission's reply. */
export const data = Effect.fnUntraced(function*(stream: DataStream) {
  const session = yield* Session
  const config = yield* GatewayConfig
  const submission = yield* Submission
  const memory = yield* MessageMemory
  const state = yield* Ref.updateAndGet(session.state, (s) => ({ ...s, inData: true }))
  const principal = yield* principalOf(state)
  if (Option.isNone(state.envelope)) return yield* Effect.die("DATA without a transaction")
  const envelope = state.envelope.value
  yield* Effect.annotateCurrentSpan({ "smtp.recipient_count": envelope.rcptTo.length })

  let size = 0
  return yield* Effect.gen(function*() {
    // the message's bytes count against MAX_MESSAGE_MEMORY until its transaction ends (the scope below)
    const reservation = yield* memory.reserve
    // a DataTooSlow reply (421) is sent at once and closes the connection: Listener.ts's onData does it
    const message = yield* Effect.raceFirst(
      readBody(stream, config.limits.maxMessageSize, reservation).pipe(
        Effect.tapErrorTag("InsufficientStorage", logMemoryFull)
      ),
      dataRateWatchdog(stream)
    )
    yield* memory.report
    yield* Ref.update(session.state, (s) => ({ ...s, delivering: true }))
    if (message.bareLineEndings > 0) {
      yield* Metric.update(bareLineEndings, message.bareLineEndings)
      yield* Effect.logInfo("bare CR or LF in the message, rewritten to CRLF").pipe(
        Effect.annotateLogs({ bare_line_endings: message.bareLineEndings })
      )
    }
    size = message.size
    yield* Effect.annotateCurrentSpan({ "smtp.message_size": message.size })
    yield* Ref.update(session.state, (s) => ({ ...s, bytes: s.bytes + message.size }))
    yield* Metric.update(emailsReceived, 1)
    const reply = yield* submission.submit({
      session: yield* session.info,
      principal,
      credentials: state.credentials,
      envelope,
      message
    })
    yield* Ref.update(session.state, (s) => ({ ...s, messages: s.messages + 1 }))
    return reply
  }).pipe(
    Effect.scoped,
    Effect.onExit((exit) => {
      const reply = Exit.isSuccess(exit) ? Option.some(exit.value) : refusalOf(exit.cause)
      return Effect.andThen(
        Ref.update(session.state, (s) => ({ ...s, inData: false, delivering: false, envelope: Option.none() })),
        Option.match(reply, {
          onNone: () => Effect.void,
          onSome: (r) =>
            Effect.logInfo("transaction ended").pipe(
              Effect.annotateLogs({ reply: r.toString(), size, recipients: envelope.rcptTo.length })
            )
        })
      )
    })
  )
}, annotateReply((reply: Reply) => reply.code), Effect.withSpan("smtp.data"))

/** The TLS handshake finished (STARTTLS or implicit TLS): no renegotiation, remember what was agreed. */
export const secured = Effect.fnUntraced(function*(socket: unknown) {
  if (!(socket instanceof tls.TLSSocket)) return
  socket.disableRenegotiation()
  const session = yield* Session
  const info: TlsInfo = { protocol: socket.getProtocol() ?? "unknown", cipher: socket.getCipher()?.name ?? "unknown" }
  yield* Ref.update(session.state, (s) => ({ ...s, tls: Option.some(info) }))
  yield* session.annotate({ "tls.protocol": info.protocol, "tls.cipher": info.cipher })
})

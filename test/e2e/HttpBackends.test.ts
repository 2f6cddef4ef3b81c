/**
 * End to end with AUTH_BACKEND=http UPSTREAM=http (issue 3, Acceptance, second part): real clients
 * (nodemailer, Python's smtplib) through the real gateway, with two real HTTP servers on loopback as
 * the generic auth API and the email API (design.md §5). The checks read what both servers received
 * and the replies the clients got.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { CanonicalMessage } from "../../src/domain/Message.ts"
import { clientsAs, closedPort, type MailOptions } from "../support/Clients.ts"
import { type CannedResponse, json, type RecordedRequest, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { quickEnv, startGateway } from "../support/TestGateway.ts"

const user = { username: "carol", password: "carol-secret-password" } as const

const Login = Schema.Struct({ username: Schema.String, password: Schema.String })
const decodeLogin = Schema.decodeUnknownSync(Schema.fromJsonString(Login))
const decodeCanonical = Schema.decodeUnknownSync(Schema.fromJsonString(CanonicalMessage))

/**
 * An auth API that knows `user`: `200 {api_key, senders, expires_in?}` for the right password (a new key
 * per call: `key-1`, `key-2`, ...), `401` for any other.
 */
const authApi = (answer: { readonly senders?: ReadonlyArray<string>; readonly expiresIn?: number } = {}) => {
  let issued = 0
  return (request: RecordedRequest): CannedResponse => {
    const login = decodeLogin(request.body)
    if (login.username !== user.username || login.password !== user.password) {
      return json(401, { error: "invalid credentials" })
    }
    issued += 1
    return json(200, {
      api_key: `key-${issued}`,
      senders: answer.senders ?? ["carol@example.com", "@example.org"],
      ...(answer.expiresIn === undefined ? {} : { expires_in: answer.expiresIn })
    })
  }
}

/** The auth API, the email API (answering `202 {id}`) and the gateway between them. */
const httpGateway = (auth: (request: RecordedRequest) => CannedResponse = authApi(), env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const authServer = yield* RecordingHttpServer.make
    yield* authServer.respondWith(auth)
    const emailServer = yield* RecordingHttpServer.make
    let accepted = 0
    yield* emailServer.respondWith(() => json(202, { id: `api-${++accepted}` }))
    const gateway = yield* startGateway({
      AUTH_BACKEND: "http",
      AUTH_URL: `${authServer.url}/verify`,
      UPSTREAM: "http",
      UPSTREAM_URL: `${emailServer.url}/v1/messages`,
      ...quickEnv,
      ...env
    })
    return { authServer, emailServer, port: gateway.smtpPort }
  })

const { nodemailerSend, nodemailerLogin, smtplib } = clientsAs(user, "LOGIN")

const mail = (overrides: Partial<MailOptions> = {}): MailOptions => ({
  from: "Carol <carol@example.com>",
  to: "dan@example.net",
  subject: "Hello",
  text: "Hello Dan.",
  ...overrides
})

const authUnavailable = "454 4.7.0 Temporary authentication failure, try again later"
const senderNotAllowed = "550 5.7.1 Sender address not allowed for this account"

describe("HTTP auth backend and HTTP upstream end to end", () => {
  it.live("posts nodemailer's message with the api_key the auth API gave as the bearer token", () =>
    Effect.gen(function*() {
      const { authServer, emailServer, port } = yield* httpGateway()
      const reply = yield* nodemailerSend(port, mail({ cc: "erin@example.net", bcc: "frank@example.net" }))
      assert.match(reply, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/)

      const [login, ...moreLogins] = yield* authServer.requests
      assert.strictEqual(moreLogins.length, 0)
      assert.strictEqual(login!.method, "POST")
      assert.strictEqual(login!.path, "/verify")
      assert.deepStrictEqual(decodeLogin(login!.body), { username: user.username, password: user.password })

      const [post, ...morePosts] = yield* emailServer.requests
      assert.strictEqual(morePosts.length, 0, "one POST for the whole message")
      assert.strictEqual(post!.path, "/v1/messages")
      assert.strictEqual(post!.headers["authorization"], "Bearer key-1")
      const message = decodeCanonical(post!.body)
      assert.deepStrictEqual(message.principal, { username: user.username })
      assert.deepStrictEqual(message.envelope, {
        mail_from: "carol@example.com",
        rcpt_to: ["dan@example.net", "erin@example.net", "frank@example.net"]
      })
      assert.strictEqual(message.subject, "Hello")
    }))

  it.live("posts a message from Python's smtplib (AUTH LOGIN) with the api_key as the bearer token", () =>
    Effect.gen(function*() {
      const { emailServer, port } = yield* httpGateway()
      const replies = yield* smtplib({
        port,
        mail_from: "news@example.org",
        rcpt_to: ["dan@example.net"],
        headers: [["From", "News <news@example.org>"], ["To", "dan@example.net"], ["Subject", "From smtplib"]],
        text: "Sent with Python's smtplib."
      })
      assert.strictEqual(replies.auth, "235 2.7.0 Authentication successful")
      assert.match(replies.data ?? "", /^250 2\.0\.0 Ok: queued as /)
      const [post] = yield* emailServer.requests
      assert.strictEqual(post!.headers["authorization"], "Bearer key-1")
      const message = decodeCanonical(post!.body)
      assert.deepStrictEqual(message.from, { address: "news@example.org", name: "News" })
      assert.strictEqual(message.text, "Sent with Python's smtplib.\n")
    }))

  it.live("asks the auth API once for 100 concurrent and then 100 sequential sessions with one credential", () =>
    Effect.gen(function*() {
      const { authServer, port } = yield* httpGateway()
      const concurrent = yield* Effect.forEach(Array.from({ length: 100 }), () => nodemailerLogin(port), {
        concurrency: "unbounded"
      })
      assert.isTrue(concurrent.every((ok) => ok === true))
      assert.strictEqual((yield* authServer.requests).length, 1, "the concurrent logins share one call")
      const sequential = yield* Effect.forEach(Array.from({ length: 100 }), () => nodemailerLogin(port))
      assert.isTrue(sequential.every((ok) => ok === true))
      assert.strictEqual((yield* authServer.requests).length, 1, "later logins are answered from the cache")
    }))

  it.live("asks the auth API again once the api_key has expired, and sends with the new key", () =>
    Effect.gen(function*() {
      const { authServer, emailServer, port } = yield* httpGateway(authApi({ expiresIn: 1 }))
      assert.match(yield* nodemailerSend(port, mail()), /^250 /)
      assert.match(yield* nodemailerSend(port, mail()), /^250 /)
      assert.strictEqual((yield* authServer.requests).length, 2)
      const posts = yield* emailServer.requests
      assert.deepStrictEqual(posts.map((p) => p.headers["authorization"]), ["Bearer key-1", "Bearer key-2"])
    }))

  it.live("answers 535 when the auth API says 401, and a second time from the cache", () =>
    Effect.gen(function*() {
      const { authServer, port } = yield* httpGateway()
      const first = yield* smtplib({ port, password: "wrong-password" })
      assert.strictEqual(first.auth, "535 5.7.8 Authentication credentials invalid")
      const second = yield* nodemailerSend(port, mail(), "wrong-password")
      assert.strictEqual(second, "535 5.7.8 Authentication credentials invalid")
      assert.strictEqual((yield* authServer.requests).length, 1, "the refusal is cached")
    }))

  it.live("answers 454 when the auth API fails with 5xx, and does not cache the failure", () =>
    Effect.gen(function*() {
      const { authServer, port } = yield* httpGateway(() => json(503, { error: "maintenance" }))
      const down = yield* smtplib({ port })
      assert.strictEqual(down.auth, authUnavailable)
      assert.strictEqual((yield* authServer.requests).length, 3, "one call and two retries")

      yield* authServer.respondWith(authApi())
      assert.match(yield* nodemailerSend(port, mail()), /^250 /)
    }))

  it.live("answers 454 when the auth API cannot be reached", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway({
        AUTH_BACKEND: "http",
        AUTH_URL: `http://127.0.0.1:${yield* closedPort}/verify`,
        UPSTREAM: "http",
        UPSTREAM_URL: `http://127.0.0.1:${yield* closedPort}/v1/messages`
      })
      const replies = yield* smtplib({ port: gateway.smtpPort })
      assert.strictEqual(replies.auth, authUnavailable)
    }))

  it.live("enforces the senders the auth API returned: 550 5.7.1 at MAIL, and for the From header after DATA", () =>
    Effect.gen(function*() {
      const { emailServer, port } = yield* httpGateway()
      const outside = yield* smtplib({ port, mail_from: "mallory@example.net", rcpt_to: ["dan@example.net"] })
      assert.strictEqual(outside.mail, senderNotAllowed)
      const sibling = yield* smtplib({ port, mail_from: "dave@example.com", rcpt_to: ["dan@example.net"] })
      assert.strictEqual(sibling.mail, senderNotAllowed, "carol@example.com allows no other address of example.com")
      const header = yield* nodemailerSend(port, {
        ...mail({ from: "Mallory <mallory@example.net>" }),
        envelope: { from: "carol@example.com", to: "dan@example.net" }
      })
      assert.strictEqual(header, senderNotAllowed)
      assert.strictEqual((yield* emailServer.requests).length, 0)

      assert.match(yield* nodemailerSend(port, mail({ from: "Anyone <anyone@EXAMPLE.org>" })), /^250 /, "a @domain rule")
    }))

  it.live("answers 550 5.7.1 when the email API refuses the key, and asks the auth API anew next time", () =>
    Effect.gen(function*() {
      const { authServer, emailServer, port } = yield* httpGateway()
      yield* emailServer.respondWith(() => json(401, { error: "key revoked" }))
      assert.strictEqual(yield* nodemailerSend(port, mail()), "550 5.7.1 Sender or account refused by the email API")
      yield* emailServer.respondWith(() => json(202, { id: "api-after" }))
      assert.match(yield* nodemailerSend(port, mail()), /^250 /)
      assert.isAtLeast((yield* authServer.requests).length, 2, "the auth API is asked for a new key")
      const [first, ...later] = (yield* emailServer.requests).map((p) => p.headers["authorization"])
      assert.strictEqual(first, "Bearer key-1")
      assert.notInclude(later, "Bearer key-1", "the refused key is not used again")
    }))
})

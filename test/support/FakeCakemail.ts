/**
 * FakeCakemail: a stand-in for the Cakemail API on a real node:http server (port 0): `POST /token`
 * (password and refresh grants, MFA challenge, token expiry), `GET /brands/default/senders` (paged, per
 * account) and `POST /v2/emails` (the API's validation), with switchable faults and a record of every
 * request. Test support and `npm run fake-cakemail`; never part of the gateway.
 */
import { randomUUID } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Context, Effect, Layer, Predicate, type Scope } from "effect"

export interface FakeSender {
  readonly id: string
  readonly name: string
  readonly email: string
  confirmed: boolean
}

export interface FakeAccount {
  readonly id: number
  readonly username: string
  readonly password: string
  /** The password grant answers `{challenge}` (multi-factor authentication). */
  readonly mfa: boolean
  readonly senders: Array<FakeSender>
}

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>
  /** JSON parsed, form fields as an object, anything else as text. */
  readonly body: unknown
}

export type Endpoint = "token" | "senders" | "emails"

/** Where each endpoint answers. */
const endpoints: Readonly<Record<Endpoint, { readonly method: string; readonly path: string }>> = {
  token: { method: "POST", path: "/token" },
  senders: { method: "GET", path: "/brands/default/senders" },
  emails: { method: "POST", path: "/v2/emails" }
}
const endpointNames = Object.keys(endpoints) as ReadonlyArray<Endpoint>

/** A token pair the fake handed out, and the grant that asked for it. */
export interface IssuedToken {
  readonly grant: "password" | "refresh_token"
  readonly accessToken: string
  readonly refreshToken: string
  readonly accountId: number
}

/** What a switched-on fault does to a request of its endpoint (the request is recorded first). */
export type Fault =
  | { readonly _tag: "Status"; readonly status: number; readonly body: unknown; readonly headers: Readonly<Record<string, string>> }
  | { readonly _tag: "Slow"; readonly millis: number }
  | { readonly _tag: "Drop" }
  | { readonly _tag: "Rejected"; readonly status: "rejected" | "error" }

export const Faults = {
  status: (status: number, body: unknown = { detail: http.STATUS_CODES[status] ?? "error" }, headers: Record<string, string> = {}): Fault => ({
    _tag: "Status",
    status,
    body,
    headers
  }),
  unauthorized: (): Fault => Faults.status(401, { detail: "Not authenticated" }),
  validation: (msg: string, loc: ReadonlyArray<string> = ["body"]): Fault =>
    Faults.status(422, { detail: [{ loc, msg, type: "value_error" }] }),
  tooManyRequests: (retryAfterSeconds: number): Fault =>
    Faults.status(429, { detail: "Too Many Requests" }, { "retry-after": String(retryAfterSeconds) }),
  serverError: (): Fault => Faults.status(500, { detail: "Internal Server Error" }),
  slow: (millis: number): Fault => ({ _tag: "Slow", millis }),
  drop: (): Fault => ({ _tag: "Drop" }),
  /** `/v2/emails` only: a valid email is answered `201` with this `data.status`. */
  rejected: (status: "rejected" | "error" = "rejected"): Fault => ({ _tag: "Rejected", status })
} as const

export interface FakeCakemailOptions {
  readonly accounts?: ReadonlyArray<FakeAccount>
  /** `expires_in` of a token when the request does not ask (default 3600). */
  readonly tokenLifetimeSeconds?: number
  /** The most senders one page holds, whatever `per_page` asks (default 50). */
  readonly maxPerPage?: number
  readonly host?: string
  readonly port?: number
  /** Epoch millis; token expiry follows it (default: the wall clock). */
  readonly now?: () => number
  /** Called once per answered request (the script prints them). */
  readonly onResponse?: (request: RecordedRequest, status: number) => void
}

export interface FakeCakemailHandle {
  /** Base URL, like `http://127.0.0.1:41234` (CAKEMAIL_API_URL). */
  readonly url: string
  readonly accounts: ReadonlyArray<FakeAccount>
  readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
  readonly requestsTo: (endpoint: Endpoint) => Effect.Effect<ReadonlyArray<RecordedRequest>>
  /** Every token pair issued so far, in order. */
  readonly issued: Effect.Effect<ReadonlyArray<IssuedToken>>
  readonly clearRequests: Effect.Effect<void>
  /** Switches a fault on for the next `times` requests of the endpoint (default: until cleared). */
  readonly fault: (endpoint: Endpoint, fault: Fault, times?: number) => Effect.Effect<void>
  readonly clearFaults: Effect.Effect<void>
  /** Adds a sender to an account, or changes whether an existing one (same email) is confirmed. */
  readonly setSender: (accountId: number, sender: FakeSender) => Effect.Effect<void>
  /** Every access token issued so far is expired from now on (refresh tokens stay good). */
  readonly expireAccessTokens: Effect.Effect<void>
  /** Every refresh token issued so far is refused from now on. */
  readonly revokeRefreshTokens: Effect.Effect<void>
  readonly close: Effect.Effect<void>
}

/** The default accounts: two that send, one with MFA. */
export const defaultAccounts = (): Array<FakeAccount> => [
  {
    id: 1001,
    username: "alice@example.test",
    password: "alice-secret",
    mfa: false,
    senders: [
      { id: "1001-1", name: "Alice", email: "alice@example.test", confirmed: true },
      { id: "1001-2", name: "Newsletter", email: "news@example.test", confirmed: true },
      { id: "1001-3", name: "Pending", email: "pending@example.test", confirmed: false }
    ]
  },
  {
    id: 1002,
    username: "bob@example.org",
    password: "bob-secret",
    mfa: false,
    senders: [{ id: "1002-1", name: "Bob", email: "bob@example.org", confirmed: true }]
  },
  { id: 1003, username: "mfa@example.test", password: "mfa-secret", mfa: true, senders: [] }
]

const attachmentNamePattern = /^[a-zA-Z0-9-_]+\.(csv|doc|docx|ics|jpeg|pdf|png|xls|xlsx)$/
const attachmentTypes = ["csv", "doc", "docx", "calendar", "jpeg", "pdf", "png", "xls", "xlsx"]
const emailPattern = /^[^\s@]+@[^\s@]+\.[^\s@]+$/
const base64Pattern = /^[A-Za-z0-9+/]*={0,2}$/

interface Issue {
  readonly loc: ReadonlyArray<string | number>
  readonly msg: string
  readonly type: string
}

/** The checks of `POST /v2/emails`, FastAPI style (`loc` from `body`). */
const validateEmail = (body: unknown, confirmedSenderIds: ReadonlySet<string>): Array<Issue> => {
  const issues: Array<Issue> = []
  const issue = (loc: ReadonlyArray<string | number>, msg: string, type = "value_error") =>
    issues.push({ loc: ["body", ...loc], msg, type })
  if (!Predicate.isObject(body)) {
    issue([], "body must be a JSON object", "type_error")
    return issues
  }
  if (typeof body.email !== "string") issue(["email"], "field required", "missing")
  else if (!emailPattern.test(body.email)) issue(["email"], "value is not a valid email address")

  const sender = body.sender
  if (!Predicate.isObject(sender) || typeof sender.id !== "string") issue(["sender", "id"], "field required", "missing")
  else if (!confirmedSenderIds.has(sender.id)) issue(["sender", "id"], "sender is not a confirmed sender of the account")
  if (Predicate.isObject(sender) && sender.name !== undefined && typeof sender.name !== "string") issue(["sender", "name"], "str type expected")

  const content = body.content
  if (!Predicate.isObject(content)) issue(["content"], "field required", "missing")
  else {
    if (typeof content.subject !== "string" || content.subject.trim() === "") issue(["content", "subject"], "field required", "missing")
    const html = typeof content.html === "string" && content.html !== "" ? content.html : undefined
    const text = typeof content.text === "string" && content.text !== "" ? content.text : undefined
    if (html === undefined && text === undefined) issue(["content"], "html or text is required")
    if (content.type !== undefined && content.type !== "transactional" && content.type !== "marketing") {
      issue(["content", "type"], "value is not a valid enumeration member; permitted: 'transactional', 'marketing'")
    }
    if (content.encoding !== undefined && typeof content.encoding !== "string") issue(["content", "encoding"], "str type expected")
  }

  if (body.list_id !== undefined && !Number.isInteger(body.list_id)) issue(["list_id"], "value is not a valid integer")
  if (body.tags !== undefined && !(Array.isArray(body.tags) && body.tags.every((t) => typeof t === "string"))) {
    issue(["tags"], "value is not a valid list of strings")
  }
  if (body.tracking !== undefined) {
    if (!Predicate.isObject(body.tracking)) issue(["tracking"], "value is not a valid dict")
    else {
      for (const [key, value] of Object.entries(body.tracking)) {
        if (!["opens", "clicks_html", "clicks_text"].includes(key)) issue(["tracking", key], "extra fields not permitted")
        else if (typeof value !== "boolean") issue(["tracking", key], "value could not be parsed to a boolean")
      }
    }
  }
  if (body.additional_headers !== undefined) {
    if (!Array.isArray(body.additional_headers)) issue(["additional_headers"], "value is not a valid list")
    else {
      body.additional_headers.forEach((h: unknown, i: number) => {
        if (!Predicate.isObject(h) || typeof h.name !== "string" || typeof h.value !== "string") {
          issue(["additional_headers", i], "name and value are required strings")
        }
      })
    }
  }
  if (body.attachment !== undefined) {
    if (!Array.isArray(body.attachment)) issue(["attachment"], "value is not a valid list")
    else {
      body.attachment.forEach((a: unknown, i: number) => {
        if (!Predicate.isObject(a)) return issue(["attachment", i], "value is not a valid dict")
        if (typeof a.filename !== "string" || !attachmentNamePattern.test(a.filename)) {
          issue(["attachment", i, "filename"], `string does not match regex "${attachmentNamePattern.source}"`)
        }
        if (typeof a.type !== "string" || !attachmentTypes.includes(a.type)) {
          issue(["attachment", i, "type"], `value is not a valid enumeration member; permitted: ${attachmentTypes.join(", ")}`)
        }
        if (typeof a.content !== "string" || !base64Pattern.test(a.content)) issue(["attachment", i, "content"], "content must be base64")
      })
    }
  }
  return issues
}

interface AccessToken {
  readonly accountId: number
  expiresAt: number
}

export class FakeCakemail extends Context.Service<FakeCakemail, FakeCakemailHandle>()("test/support/FakeCakemail") {
  static readonly make = (options: FakeCakemailOptions = {}): Effect.Effect<FakeCakemailHandle, never, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.promise(() => start(options)),
      (handle) => handle.close
    )

  static readonly layer = (options: FakeCakemailOptions = {}) => Layer.effect(FakeCakemail, FakeCakemail.make(options))
}

const start = async (options: FakeCakemailOptions): Promise<FakeCakemailHandle> => {
  const now = options.now ?? (() => Date.now())
  const accounts = (options.accounts ?? defaultAccounts()).map((a) => ({ ...a, senders: a.senders.map((s) => ({ ...s })) }))
  const lifetime = options.tokenLifetimeSeconds ?? 3600
  const maxPerPage = options.maxPerPage ?? 50
  const recorded: Array<RecordedRequest> = []
  const faults = new Map<Endpoint, Array<{ fault: Fault; remaining: number }>>()
  const accessTokens = new Map<string, AccessToken>()
  const refreshTokens = new Map<string, number>()
  const issued: Array<IssuedToken> = []

  const issueToken = (account: FakeAccount, expiresIn: number, grant: IssuedToken["grant"]) => {
    const access = `at-${randomUUID()}`
    const refresh = `rt-${randomUUID()}`
    issued.push({ grant, accessToken: access, refreshToken: refresh, accountId: account.id })
    accessTokens.set(access, { accountId: account.id, expiresAt: now() + expiresIn * 1000 })
    refreshTokens.set(refresh, account.id)
    return { access_token: access, token_type: "bearer", expires_in: expiresIn, refresh_token: refresh, accounts: [account.id] }
  }

  const bearerAccount = (headers: http.IncomingHttpHeaders): FakeAccount | undefined => {
    const match = /^Bearer (\S+)$/i.exec(headers.authorization ?? "")
    const token = match?.[1] === undefined ? undefined : accessTokens.get(match[1])
    if (token === undefined || token.expiresAt <= now()) return undefined
    return accounts.find((a) => a.id === token.accountId)
  }

  const takeFault = (endpoint: Endpoint): Fault | undefined => {
    const queue = faults.get(endpoint)
    const head = queue?.[0]
    if (queue === undefined || head === undefined) return undefined
    head.remaining -= 1
    if (head.remaining <= 0) queue.shift()
    return head.fault
  }

  const readBody = (req: http.IncomingMessage) =>
    new Promise<string>((resolve, reject) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
      req.on("error", reject)
    })

  const parseBody = (contentType: string, text: string): unknown => {
    if (text === "") return undefined
    if (contentType.startsWith("application/json")) {
      try {
        return JSON.parse(text) as unknown
      } catch {
        return text
      }
    }
    if (contentType.startsWith("application/x-www-form-urlencoded")) return Object.fromEntries(new URLSearchParams(text))
    return text
  }

  const handleToken = (record: RecordedRequest, contentType: string): [number, unknown] => {
    if (!contentType.startsWith("application/x-www-form-urlencoded")) {
      return [422, { detail: [{ loc: ["body"], msg: "form data expected", type: "value_error" }] }]
    }
    const form = Predicate.isObject(record.body) ? record.body : {}
    const expiration = form.expiration_seconds
    let expiresIn = lifetime
    if (expiration !== undefined) {
      const n = Number(expiration)
      if (!Number.isInteger(n) || n < 600) {
        return [422, { detail: [{ loc: ["body", "expiration_seconds"], msg: "ensure this value is greater than or equal to 600", type: "value_error" }] }]
      }
      expiresIn = n
    }
    if (form.grant_type === "password") {
      if (typeof form.username !== "string" || typeof form.password !== "string") {
        return [422, { detail: [{ loc: ["body", "username"], msg: "field required", type: "missing" }] }]
      }
      const account = accounts.find((a) => a.username.toLowerCase() === String(form.username).toLowerCase())
      if (account === undefined || account.password !== form.password) {
        return [401, { detail: "Incorrect username or password" }]
      }
      if (account.mfa) return [200, { challenge: `mfa-${randomUUID()}` }]
      return [200, issueToken(account, expiresIn, "password")]
    }
    if (form.grant_type === "refresh_token") {
      const refresh = typeof form.refresh_token === "string" ? form.refresh_token : ""
      const accountId = refreshTokens.get(refresh)
      const account = accounts.find((a) => a.id === accountId)
      if (account === undefined) return [400, { detail: "Invalid refresh token" }]
      refreshTokens.delete(refresh)
      return [200, issueToken(account, expiresIn, "refresh_token")]
    }
    return [400, { detail: "Unsupported grant type" }]
  }

  const handleSenders = (record: RecordedRequest, account: FakeAccount): [number, unknown] => {
    const page = Math.max(1, Number.parseInt(record.query.page ?? "1", 10) || 1)
    const perPage = Math.min(maxPerPage, Math.max(1, Number.parseInt(record.query.per_page ?? "50", 10) || 50))
    const slice = account.senders.slice((page - 1) * perPage, page * perPage)
    return [200, {
      pagination: { page, per_page: perPage, count: record.query.with_count === "true" ? account.senders.length : null },
      data: slice.map((s) => ({ id: s.id, name: s.name, email: s.email, confirmed: s.confirmed, language: "en_US" }))
    }]
  }

  const handleEmail = (record: RecordedRequest, account: FakeAccount, rejectAs: "rejected" | "error" | undefined): [number, unknown] => {
    const confirmed = new Set(account.senders.filter((s) => s.confirmed).map((s) => s.id))
    const issues = validateEmail(record.body, confirmed)
    if (issues.length > 0) return [422, { detail: issues }]
    const email = Predicate.isObject(record.body) ? String(record.body.email) : ""
    return [201, { email, object: "email", submitted: true, data: { id: randomUUID(), status: rejectAs ?? "queued" } }]
  }

  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://fake")
      const text = await readBody(req)
      const contentType = String(req.headers["content-type"] ?? "")
      const headers: Record<string, string> = {}
      for (const [name, value] of Object.entries(req.headers)) {
        if (value !== undefined) headers[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value
      }
      const record: RecordedRequest = {
        method: req.method ?? "GET",
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers,
        body: parseBody(contentType, text)
      }
      recorded.push(record)
      const reply = (status: number, body: unknown, extra: Record<string, string> = {}) => {
        res.writeHead(status, { "content-type": "application/json", ...extra })
        res.end(JSON.stringify(body))
        options.onResponse?.(record, status)
      }

      const endpoint = endpointNames.find((name) =>
        endpoints[name].method === record.method && endpoints[name].path === url.pathname
      )
      if (endpoint === undefined) return reply(404, { detail: "Not Found" })

      let fault = takeFault(endpoint)
      if (fault?._tag === "Slow") {
        await new Promise((resolve) => setTimeout(resolve, fault?._tag === "Slow" ? fault.millis : 0))
        if (res.destroyed) return
        fault = undefined
      }
      if (fault?._tag === "Drop") {
        req.socket.destroy()
        return
      }
      if (fault?._tag === "Status") return reply(fault.status, fault.body, { ...fault.headers })

      if (endpoint === "token") return reply(...handleToken(record, contentType))
      const account = bearerAccount(req.headers)
      if (account === undefined) return reply(401, { detail: "Not authenticated" })
      if (endpoint === "senders") return reply(...handleSenders(record, account))
      if (!contentType.startsWith("application/json") || typeof record.body !== "object") {
        return reply(422, { detail: [{ loc: ["body"], msg: "a JSON body is required", type: "value_error" }] })
      }
      return reply(...handleEmail(record, account, fault?._tag === "Rejected" ? fault.status : undefined))
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500).end()
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve())
  })
  const address = server.address() as AddressInfo
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address

  return {
    url: `http://${host}:${address.port}`,
    accounts,
    requests: Effect.sync(() => [...recorded]),
    requestsTo: (endpoint) => Effect.sync(() => recorded.filter((r) => r.path === endpoints[endpoint].path)),
    issued: Effect.sync(() => [...issued]),
    clearRequests: Effect.sync(() => {
      recorded.length = 0
    }),
    fault: (endpoint, fault, times = Number.POSITIVE_INFINITY) =>
      Effect.sync(() => {
        const queue = faults.get(endpoint) ?? []
        queue.push({ fault, remaining: times })
        faults.set(endpoint, queue)
      }),
    clearFaults: Effect.sync(() => faults.clear()),
    setSender: (accountId, sender) =>
      Effect.sync(() => {
        const account = accounts.find((a) => a.id === accountId)
        if (account === undefined) throw new Error(`no fake account ${accountId}`)
        const existing = account.senders.find((s) => s.email.toLowerCase() === sender.email.toLowerCase())
        if (existing === undefined) account.senders.push({ ...sender })
        else existing.confirmed = sender.confirmed
      }),
    expireAccessTokens: Effect.sync(() => {
      for (const token of accessTokens.values()) token.expiresAt = 0
    }),
    revokeRefreshTokens: Effect.sync(() => refreshTokens.clear()),
    close: Effect.promise(() =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
    )
  }
}

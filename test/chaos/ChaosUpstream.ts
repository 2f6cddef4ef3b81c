/**
 * An unreliable email API for the chaos test: a real `node:http` server on loopback port 0 that takes
 * the gateway's canonical JSON (design.md §5) and, for a share of requests, answers 500, answers 429
 * with Retry-After, hangs until the caller gives up, resets the connection, or stores the message and
 * then drops the response. It dedupes by Idempotency-Key when told to, and counts everything.
 * Test support only: it checks nothing itself; the test reads its counts.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect, type Scope } from "effect"

/** Shares of requests (0..1) that meet each fault; the rest are stored and answered 200. */
export interface FaultShares {
  readonly error500: number
  /** 429 with `Retry-After: 1`, which fits inside the test's delivery deadline. */
  readonly retryAfterShort: number
  /** 429 with `Retry-After: 30`, which does not: the gateway answers 451 4.7.1 at once. */
  readonly retryAfterLong: number
  /** No answer at all until the caller closes the connection; nothing stored. */
  readonly hang: number
  /** The connection is destroyed before anything is stored. */
  readonly reset: number
  /** Stored, then the connection is destroyed without an answer. */
  readonly drop: number
}

export const defaultFaults: FaultShares = {
  error500: 0.04,
  retryAfterShort: 0.02,
  retryAfterLong: 0.01,
  hang: 0.02,
  reset: 0.03,
  drop: 0.03
}

/** One stored message, as the API kept it. */
export interface StoredMessage {
  readonly upstreamId: string
  readonly idempotencyKey: string
  /** The gateway id (`id` of the canonical message): what `queued as` named. */
  readonly gatewayId: string
  readonly messageId: string
  readonly recipients: ReadonlyArray<string>
}

export interface ChaosCounts {
  readonly requests: number
  readonly error500: number
  readonly retryAfterShort: number
  readonly retryAfterLong: number
  readonly hang: number
  readonly reset: number
  /** Stored, then the response was dropped on purpose (the connection destroyed unanswered). */
  readonly dropped: number
  /**
   * Stored and answered, but the caller gave up on the answer: it closed the connection before the
   * answer was out, or within a moment after (its attempt timeout or deadline cut the read short).
   */
  readonly abandoned: number
  /** Requests answered from an earlier one with the same Idempotency-Key (nothing stored again). */
  readonly replayed: number
  readonly stored: number
}

export interface ChaosUpstream {
  readonly url: string
  /** Honour Idempotency-Key (answer a repeat with the first answer) or ignore it, as Cakemail does. */
  readonly setHonourKey: (honour: boolean) => void
  readonly counts: () => ChaosCounts
  readonly stored: () => ReadonlyArray<StoredMessage>
  /** How many stored-then-lost answers (dropped or abandoned) each Idempotency-Key had. */
  readonly droppedByKey: () => ReadonlyMap<string, number>
  /** The gateway ids (canonical `id`) of every request answered 200, stored or replayed. */
  readonly acceptedGatewayIds: () => ReadonlySet<string>
  /** Forget everything stored and counted (between rounds). */
  readonly reset: () => void
}

/** In a Message-ID, asks for a slow first answer (see `handle`). */
export const slowMark = ".slow@"

const zero: ChaosCounts = {
  requests: 0,
  error500: 0,
  retryAfterShort: 0,
  retryAfterLong: 0,
  hang: 0,
  reset: 0,
  dropped: 0,
  abandoned: 0,
  replayed: 0,
  stored: 0
}

interface CanonicalBody {
  readonly id: string
  readonly message_id: string
  readonly envelope: { readonly rcpt_to: ReadonlyArray<string> }
}

const isCanonical = (u: unknown): u is CanonicalBody =>
  typeof u === "object" && u !== null && "id" in u && "message_id" in u && "envelope" in u

/** Starts the stand-in for the current scope. */
export const makeChaosUpstream = (faults: FaultShares = defaultFaults): Effect.Effect<ChaosUpstream, never, Scope.Scope> =>
  Effect.gen(function*() {
    let honourKey = true
    let counts = { ...zero }
    let stored: Array<StoredMessage> = []
    let byKey = new Map<string, StoredMessage>()
    let droppedByKey = new Map<string, number>()
    let acceptedGatewayIds = new Set<string>()
    let nextId = 0
    /** Calls of a message marked slow that were already answered slowly (once per Idempotency-Key). */
    let slowed = new Set<string>()

    const store = (key: string, body: CanonicalBody): StoredMessage => {
      const message: StoredMessage = {
        upstreamId: `up-${++nextId}`,
        idempotencyKey: key,
        gatewayId: body.id,
        messageId: body.message_id,
        recipients: body.envelope.rcpt_to
      }
      stored.push(message)
      byKey.set(key, message)
      counts = { ...counts, stored: counts.stored + 1 }
      return message
    }
    const lost = (key: string, how: "dropped" | "abandoned") => {
      counts = { ...counts, [how]: counts[how] + 1 }
      droppedByKey.set(key, (droppedByKey.get(key) ?? 0) + 1)
    }
    /** The last answer written on each connection: a caller that closes right after it gave up on it. */
    const lastAnswer = new WeakMap<object, { readonly key: string; finishedAt: number | undefined }>()

    const handle = (req: http.IncomingMessage, res: http.ServerResponse, text: string) => {
      counts = { ...counts, requests: counts.requests + 1 }
      const key = String(req.headers["idempotency-key"] ?? "")
      const body: unknown = JSON.parse(text)
      if (!isCanonical(body) || key === "") {
        res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ detail: "bad request" }))
        return
      }
      const answer = (status: number, json: unknown, headers: Record<string, string> = {}) =>
        res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(json))

      if (honourKey) {
        const earlier = byKey.get(key)
        if (earlier !== undefined) {
          counts = { ...counts, replayed: counts.replayed + 1 }
          acceptedGatewayIds.add(body.id)
          return answer(200, { id: earlier.upstreamId })
        }
      }
      // a message marked slow: its first call per recipient waits out a Retry-After longer than an
      // impatient client's patience, so that client hangs up in every round, not only by chance
      if (body.message_id.includes(slowMark) && !slowed.has(key)) {
        slowed.add(key)
        counts = { ...counts, retryAfterShort: counts.retryAfterShort + 1 }
        return answer(429, { detail: "slow down" }, { "retry-after": "1" })
      }
      let roll = Math.random()
      const hit = (share: number) => {
        roll -= share
        return roll < 0
      }
      if (hit(faults.error500)) {
        counts = { ...counts, error500: counts.error500 + 1 }
        return answer(500, { detail: "internal error" })
      }
      if (hit(faults.retryAfterShort)) {
        counts = { ...counts, retryAfterShort: counts.retryAfterShort + 1 }
        return answer(429, { detail: "slow down" }, { "retry-after": "1" })
      }
      if (hit(faults.retryAfterLong)) {
        counts = { ...counts, retryAfterLong: counts.retryAfterLong + 1 }
        return answer(429, { detail: "slow down" }, { "retry-after": "30" })
      }
      if (hit(faults.hang)) {
        counts = { ...counts, hang: counts.hang + 1 }
        return // the caller's timeout ends it
      }
      if (hit(faults.reset)) {
        counts = { ...counts, reset: counts.reset + 1 }
        req.socket.destroy()
        return
      }
      const message = store(key, body)
      if (hit(faults.drop)) {
        lost(key, "dropped")
        req.socket.destroy()
        return
      }
      const last = { key, finishedAt: undefined as number | undefined }
      lastAnswer.set(req.socket, last)
      res.once("finish", () => {
        last.finishedAt = performance.now()
      })
      acceptedGatewayIds.add(body.id)
      answer(200, { id: message.upstreamId })
    }

    const server = http.createServer((req, res) => {
      lastAnswer.delete(req.socket)
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => handle(req, res, Buffer.concat(chunks).toString("utf8")))
      req.on("error", () => undefined)
    })
    // keep-alive connections stay open between requests; a close right after an answer means the caller gave up
    server.on("connection", (socket) => {
      socket.once("close", () => {
        const last = lastAnswer.get(socket)
        if (last !== undefined && (last.finishedAt === undefined || performance.now() - last.finishedAt < 2000)) {
          lost(last.key, "abandoned")
        }
      })
    })
    yield* Effect.acquireRelease(
      Effect.callback<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    const { port } = server.address() as AddressInfo

    return {
      url: `http://127.0.0.1:${port}/v1/messages`,
      setHonourKey: (honour) => {
        honourKey = honour
      },
      counts: () => counts,
      stored: () => stored,
      droppedByKey: () => droppedByKey,
      acceptedGatewayIds: () => acceptedGatewayIds,
      reset: () => {
        counts = { ...zero }
        stored = []
        byKey = new Map()
        slowed = new Set()
        droppedByKey = new Map()
        acceptedGatewayIds = new Set()
      }
    }
  })

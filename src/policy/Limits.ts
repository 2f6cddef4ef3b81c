/**
 * Limits: message rates (per client IP, per user; `effect/persistence` RateLimiter) and AUTH failure
 * lockouts (per IP+username and per IP, with a growing delay), kept in memory or, when REDIS_URL is
 * set, in Redis so every gateway process shares them. An IPv6 client counts by its /64 (`clientKey`).
 * A store that fails lets traffic through (logged): an outage of Redis must not stop mail. Connection
 * counts are per process and live in smtp/Session.ts.
 */
import * as crypto from "node:crypto"
import { NodeRedis } from "@effect/platform-node"
import { Clock, Context, Duration, Effect, Layer, Metric, Option, Redacted, Schema } from "effect"
import { RateLimiter, Redis } from "effect/persistence"
import { setNewest } from "../BoundedMap.ts"
import { GatewayConfig } from "../Config.ts"
import { Replies } from "../domain/Reply.ts"
import { authFailures } from "../observability/Metrics.ts"
import { clientKey, makeCidrMatcher, normalizeAddress } from "./Cidr.ts"

/** A message over RATE_LIMIT_PER_IP or RATE_LIMIT_PER_USER: `451 4.7.1` with the wait. */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  scope: Schema.Literals(["ip", "user"]),
  retryAfterSeconds: Schema.Number
}) {
  get reply() {
    return Replies.rateLimited(this.retryAfterSeconds)
  }
}

/** AUTH refused before the backend is asked, or after too many failures: `421 4.7.0`, then close. */
export class AuthLockedOut extends Schema.TaggedError<AuthLockedOut>()("AuthLockedOut", {
  scope: Schema.Literals(["pair", "ip", "connection"])
}) {
  get reply() {
    return Replies.authLockedOut
  }
}

/** Failures of one IP+username (or one IP) are counted over this window... */
export const authFailureWindow = Duration.minutes(5)
/** ...and past the limit, the pair (or the IP) is refused for this long. */
export const authBlockDuration = Duration.hours(1)
/** An IP is blocked after this many times AUTH_FAILURE_LIMIT failures, whatever the usernames (spraying). */
const ipFailureFactor = 4
/** The delay before a `535` never exceeds this. */
const maxFailureDelay = Duration.seconds(8)
/** A store call that takes longer counts as failed (and lets the client through). */
const storeTimeout = Duration.seconds(1)

export interface AuthFailureOutcome {
  /** How long to wait before answering. */
  readonly delay: Duration.Duration
  /** This failure blocked the pair or the IP: answer `421 4.7.0` rather than `535`. */
  readonly blocked: boolean
}

// ---- the stores: lockout counters and blocks, and rate counters (memory or Redis) ------------

export interface LockoutStore {
  /** Adds one to `key` (created with a `window` expiry) and gives the count. */
  readonly increment: (key: string, window: Duration.Duration) => Effect.Effect<number, Redis.RedisError>
  readonly block: (key: string, duration: Duration.Duration) => Effect.Effect<void, Redis.RedisError>
  /** True while `key` is blocked. */
  readonly isBlocked: (key: string) => Effect.Effect<boolean, Redis.RedisError>
}

/** Keys each memory store holds at most (lockout counters, blocks, rate counters). */
const memoryCapacity = 100_000

export const makeMemoryLockoutStore = (): LockoutStore => {
  const counters = new Map<string, { count: number; expiresAt: number }>()
  const blocks = new Map<string, number>()
  return {
    increment: (key, window) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const current = counters.get(key)
        if (current !== undefined && current.expiresAt > now) return ++current.count
        const counter = { count: 1, expiresAt: now + Duration.toMillis(window) }
        setNewest(counters, key, counter, memoryCapacity, (c) => c.expiresAt <= now)
        return 1
      }),
    block: (key, duration) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        setNewest(blocks, key, now + Duration.toMillis(duration), memoryCapacity, (until) => until <= now)
      }),
    isBlocked: (key) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const until = blocks.get(key)
        if (until === undefined) return false
        if (until > now) return true
        blocks.delete(key)
        return false
      })
  }
}

/**
 * The rate limiter's memory store: Effect's, with a bounded fixed-window count. Effect's keeps a counter
 * for every key it has seen, expired or not, so without Redis the process would hold one per client
 * address and user for as long as it runs. The count is Effect's own: each message moves the window's
 * end by `refillRate` (window / limit); over the limit, the answer is the count and the wait.
 */
export const memoryRateLimiterStore = (capacity = memoryCapacity): Layer.Layer<RateLimiter.RateLimiterStore> =>
  Layer.effect(
    RateLimiter.RateLimiterStore,
    Effect.gen(function*() {
      const effectStore = yield* RateLimiter.RateLimiterStore
      const counters = new Map<string, { count: number; expiresAt: number }>()
      return RateLimiter.RateLimiterStore.of({
        ...effectStore,
        fixedWindow: ({ key, limit, refillRate, tokens }) =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            let counter = counters.get(key)
            if (counter === undefined || counter.expiresAt <= now) {
              counter = { count: 0, expiresAt: now }
              setNewest(counters, key, counter, capacity, (c) => c.expiresAt <= now)
            }
            if (limit !== undefined && counter.count + tokens > limit) {
              return [counter.count + tokens, counter.expiresAt - now] as const
            }
            counter.count += tokens
            counter.expiresAt += Duration.toMillis(refillRate) * tokens
            return [counter.count, counter.expiresAt - now] as const
          })
      })
    })
  ).pipe(Layer.provide(RateLimiter.layerStoreMemory))

const redisPrefix = "smtp-gateway:lockout:"

const makeRedisLockoutStore = (redis: Redis.Redis["Service"]): LockoutStore => ({
  // SET NX PX first, so the key always carries its expiry; INCR keeps it
  increment: (key, window) =>
    Effect.andThen(
      redis.send("SET", redisPrefix + key, "0", "PX", String(Duration.toMillis(window)), "NX"),
      redis.send<number>("INCR", redisPrefix + key)
    ).pipe(Effect.map(Number)),
  block: (key, duration) =>
    Effect.asVoid(redis.send("SET", `${redisPrefix}block:${key}`, "1", "PX", String(Duration.toMillis(duration)))),
  isBlocked: (key) => Effect.map(redis.send<number>("EXISTS", `${redisPrefix}block:${key}`), (n) => Number(n) > 0)
})

// ---- the service ----------------------------------------------------------------------------------

export class Limits extends Context.Service<Limits, {
  /** ALLOWLIST_CIDRS: exempt from rate limits and the per-IP connection limit. */
  readonly isAllowlisted: (client: string) => boolean
  /** One message (a MAIL command) from `client` as `username`; fails when either rate is exceeded. */
  readonly consumeMessage: (client: string, username: string) => Effect.Effect<void, RateLimited>
  /** Before the auth backend is asked: fails when the IP, or the IP+username, is blocked. */
  readonly checkAuth: (client: string, username: string) => Effect.Effect<void, AuthLockedOut>
  /** Counts a failed AUTH for the IP+username and the IP, blocking them past the limit. */
  readonly recordAuthFailure: (client: string, username: string) => Effect.Effect<AuthFailureOutcome>
}>()("smtp-gateway/policy/Limits") {
  /** From GatewayConfig: Redis when REDIS_URL is set (connecting at startup), memory otherwise. */
  static readonly layer: Layer.Layer<Limits, Redis.RedisError, GatewayConfig> = Layer.unwrap(
    Effect.gen(function*() {
      const config = yield* GatewayConfig
      return Option.match(config.redisUrl, {
        onNone: () => Limits.layerMemory,
        onSome: (url) => Limits.layerRedis.pipe(Layer.provide(NodeRedis.layer({ url: Redacted.value(url) })))
      })
    })
  )

  /** In this process only. */
  static readonly layerMemory: Layer.Layer<Limits, never, GatewayConfig> = Layer.effect(
    Limits,
    Effect.gen(function*() {
      const store = makeMemoryLockoutStore()
      return yield* makeLimits(store)
    })
  ).pipe(Layer.provide(RateLimiter.layer.pipe(Layer.provide(memoryRateLimiterStore()))))

  /** In Redis (the `Redis` service): shared by every process using the same server. */
  static readonly layerRedis: Layer.Layer<Limits, never, GatewayConfig | Redis.Redis> = Layer.effect(
    Limits,
    Effect.gen(function*() {
      const redis = yield* Redis.Redis
      return yield* makeLimits(makeRedisLockoutStore(redis), storeTimeout)
    })
  ).pipe(Layer.provide(RateLimiter.layer.pipe(Layer.provide(RateLimiter.layerStoreRedis({ prefix: "smtp-gateway:rate:" })))))
}

/** Keys carry a digest of the lower-cased username: bounded length, no address in the store. */
const userKey = (username: string): string => {
  const known = userKeys.get(username)
  if (known !== undefined) return known
  const key = crypto.createHash("sha256").update(username.toLowerCase(), "utf8").digest("base64url").slice(0, 22)
  if (userKeys.size >= userKeyCapacity) userKeys.clear()
  userKeys.set(username, key)
  return key
}

/** Digests of recent user names (one hash per message otherwise); bounded, cleared when full. */
const userKeys = new Map<string, string>()
const userKeyCapacity = 10_000

const lockedOut = (scope: "pair" | "ip") =>
  Effect.andThen(
    Metric.update(Metric.withAttributes(authFailures, { reason: "locked_out" }), 1),
    Effect.fail(new AuthLockedOut({ scope }))
  )

/**
 * `timeout` bounds each call to a store that can keep a client waiting (Redis); the memory stores
 * answer at once and run without one (a race costs two fibers per call).
 */
export const makeLimits = (lockouts: LockoutStore, timeout?: Duration.Duration) =>
  Effect.gen(function*() {
    const { auth, limits } = yield* GatewayConfig
    const limiter = yield* RateLimiter.RateLimiter
    const isAllowlisted = makeCidrMatcher(limits.allowlistCidrs)
    const bounded = <A, E, A2, E2>(effect: Effect.Effect<A, E>, orElse: () => Effect.Effect<A2, E2>) =>
      timeout === undefined ? effect : Effect.timeoutOrElse(effect, { duration: timeout, orElse })

    /** A store failure is logged and treated as "no limit": availability first. */
    const orOpen = <A>(what: string, fallback: A) => (effect: Effect.Effect<A, Redis.RedisError | RateLimiter.RateLimiterError>) =>
      bounded(effect, () => Effect.fail(new Redis.RedisError({ cause: `${what} timed out` }))).pipe(
        Effect.catch((error) =>
          Effect.as(Effect.logWarning(`limits store unavailable (${what}); letting the client through`, error), fallback)
        )
      )

    const consume = (scope: "ip" | "user", key: string, limit: number) =>
      limiter.consume({ key: `${scope}:${key}`, limit, window: "1 minute", algorithm: "fixed-window", onExceeded: "fail" }).pipe(
        Effect.asVoid,
        // a Redis client queues commands while it reconnects: without this, MAIL would wait for it
        (effect) => bounded(effect, () => Effect.logWarning("rate limiter store timed out; letting the message through")),
        Effect.catchReason("RateLimiterError", "RateLimitExceeded", (exceeded) =>
          Effect.fail(new RateLimited({ scope, retryAfterSeconds: Duration.toSeconds(exceeded.retryAfter) }))),
        Effect.catchTag("RateLimiterError", (error) =>
          Effect.logWarning("rate limiter store unavailable; letting the message through", error))
      )

    const consumeMessage = Effect.fnUntraced(function*(client: string, username: string) {
      if (!isAllowlisted(client)) yield* consume("ip", clientKey(client), limits.rateLimitPerIp)
      yield* consume("user", userKey(username), limits.rateLimitPerUser)
    }, Effect.withSpan("Limits.consumeMessage"))

    const checkAuth = Effect.fnUntraced(function*(client: string, username: string) {
      const counted = clientKey(client)
      if (yield* lockouts.isBlocked(`ip:${counted}`).pipe(orOpen("check", false))) return yield* lockedOut("ip")
      if (yield* lockouts.isBlocked(`pair:${counted}:${userKey(username)}`).pipe(orOpen("check", false))) {
        return yield* lockedOut("pair")
      }
    }, Effect.withSpan("Limits.checkAuth"))

    const recordAuthFailure = Effect.fn("Limits.recordAuthFailure")(function*(client: string, username: string) {
      const counted = clientKey(client)
      const pair = `pair:${counted}:${userKey(username)}`
      const pairCount = yield* lockouts.increment(pair, authFailureWindow).pipe(orOpen("count", 1))
      const ipCount = yield* lockouts.increment(`ip:${counted}`, authFailureWindow).pipe(orOpen("count", 1))
      let blocked = false
      if (pairCount >= auth.failureLimit) {
        yield* lockouts.block(pair, authBlockDuration).pipe(orOpen<void>("block", undefined))
        blocked = true
      }
      if (ipCount >= auth.failureLimit * ipFailureFactor) {
        yield* lockouts.block(`ip:${counted}`, authBlockDuration).pipe(orOpen<void>("block", undefined))
        blocked = true
      }
      if (blocked) {
        yield* Effect.logWarning("AUTH blocked after repeated failures").pipe(
          Effect.annotateLogs({ client: normalizeAddress(client), counted_as: counted, failures: pairCount, failures_from_ip: ipCount })
        )
      }
      const delay = Duration.min(
        maxFailureDelay,
        Duration.times(auth.failureDelay, 2 ** Math.min(16, Math.max(0, pairCount - 1)))
      )
      return { delay, blocked }
    })

    return Limits.of({ isAllowlisted, consumeMessage, checkAuth, recordAuthFailure })
  })

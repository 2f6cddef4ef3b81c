/**
 * DuplicateWindow (design.md §2): which upstream calls already succeeded, so a client's retry skips
 * them, and which are in flight, so a retry arriving meanwhile waits instead of sending again. Kept
 * DEDUPE_WINDOW, in memory (bounded) or in Redis when REDIS_URL is set (shared by every gateway
 * process). Keys are opaque here: Delivery derives them (`idempotencyKey`).
 */
import * as crypto from "node:crypto"
import { NodeRedis } from "@effect/platform-node"
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { Redis } from "effect/persistence"
import { setNewest } from "../BoundedMap.ts"
import { GatewayConfig } from "../Config.ts"

/** What a successful call left behind: the answer a retry of it gets. */
export const Delivered = Schema.Struct({
  /** The upstream's id for the call. */
  upstreamId: Schema.String,
  /** The gateway id the client was (or would have been) told: `250 2.0.0 Ok: queued as <gatewayId>`. */
  gatewayId: Schema.String,
  /** Clock millis when it was recorded. */
  at: Schema.Number
})
export type Delivered = typeof Delivered.Type

/**
 * The answer to `claim`: either the key was delivered already, or this caller now holds it and must
 * say how its call ended (`complete` when the upstream accepted, `release` otherwise).
 */
export type Claim =
  | { readonly _tag: "Delivered"; readonly delivered: Delivered }
  | {
    readonly _tag: "Claimed"
    readonly complete: (delivered: Delivered) => Effect.Effect<void>
    readonly release: Effect.Effect<void>
  }

export interface WindowOptions {
  /** How long a delivered key is remembered (DEDUPE_WINDOW). */
  readonly ttl: Duration.Input
  /** Redis: how long a claim may stay in flight before others may take it (a crashed holder's lapses). */
  readonly hold: Duration.Input
}

/** Memory entries kept at most; the oldest delivered ones go first. */
export const defaultCapacity = 100_000

/** A Redis command that takes longer than this counts as failed: the window then fails open. */
const redisTimeout = Duration.seconds(2)
/** How often a retry that found its key in flight in Redis looks again. */
const redisPollInterval = Duration.millis(50)

export class DuplicateWindow extends Context.Service<DuplicateWindow, {
  /**
   * Looks `key` up: `Delivered` when a call with this key succeeded within the window; otherwise waits
   * while another submission holds the key, then claims it. Never fails: when the store cannot be
   * reached it logs and answers `Claimed` (the message goes out; a duplicate is then possible).
   */
  readonly claim: (key: string) => Effect.Effect<Claim>
}>()("smtp-gateway/delivery/DuplicateWindow") {
  /** In this process only, at most `capacity` entries. */
  static readonly layerMemory = (options: WindowOptions & { readonly capacity?: number }) =>
    Layer.sync(DuplicateWindow, () => makeMemory(options))

  /** In Redis (the `Redis` service), shared by every process that uses the same server and prefix. */
  static readonly layerRedis = (options: WindowOptions & { readonly prefix?: string }) =>
    Layer.effect(DuplicateWindow, Effect.map(Redis.Redis, (redis) => makeRedis(redis, options)))

  /** From GatewayConfig: Redis when REDIS_URL is set (connecting at startup), memory otherwise. */
  static readonly layer: Layer.Layer<DuplicateWindow, Redis.RedisError, GatewayConfig> = Layer.unwrap(
    Effect.gen(function*() {
      const { delivery, redisUrl } = yield* GatewayConfig
      const options = {
        ttl: delivery.dedupeWindow,
        // a submission runs at most DELIVERY_DEADLINE; a little more covers a slow final write
        hold: Duration.sum(delivery.deadline, Duration.seconds(5))
      }
      return Option.match(redisUrl, {
        onNone: () => DuplicateWindow.layerMemory(options),
        onSome: (url) =>
          DuplicateWindow.layerRedis(options).pipe(Layer.provide(NodeRedis.layer({ url: Redacted.value(url) })))
      })
    })
  )
}

interface Pending {
  readonly token: number
  readonly settled: Deferred.Deferred<void>
}

/**
 * A delivered entry as one string, `expiresAt at gatewayId upstreamId` (whole Clock milliseconds in
 * base 36): a full window is 100,000 of these, and with them an entry takes ~230 bytes of heap where
 * two objects and their fields took ~400 (bench/dedupe-window.ts). Neither number nor a gateway id
 * holds a space; the upstream id comes last, as it is.
 */
const encodeDone = (delivered: Delivered, expiresAt: number): string =>
  // join makes one flat string; a template literal makes a tree of a node per part, 4× the memory
  [expiresAt.toString(36), delivered.at.toString(36), delivered.gatewayId, delivered.upstreamId].join(" ")

const decodeDone = (entry: string): { readonly expiresAt: number; readonly delivered: Delivered } => {
  const [expiresAt = "", at = "", gatewayId = ""] = entry.split(" ", 3)
  const upstreamId = entry.slice(expiresAt.length + at.length + gatewayId.length + 3)
  return { expiresAt: parseInt(expiresAt, 36), delivered: { upstreamId, gatewayId, at: parseInt(at, 36) } }
}

const makeMemory = (options: WindowOptions & { readonly capacity?: number }) => {
  const capacity = options.capacity ?? defaultCapacity
  const ttl = Duration.toMillis(Duration.fromInputUnsafe(options.ttl))
  // insertion order is age order: a key delivered again is deleted and set anew
  const done = new Map<string, string>()
  // in-flight claims: few and short, never evicted
  const pending = new Map<string, Pending>()
  let tokens = 0

  const claimed = (key: string, token: number, settled: Deferred.Deferred<void>): Claim => {
    const ours = () => pending.get(key)?.token === token
    return {
      _tag: "Claimed",
      complete: (delivered) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            if (ours()) pending.delete(key)
            setNewest(done, key, encodeDone(delivered, now + ttl), capacity)
            Deferred.doneUnsafe(settled, Effect.void)
          })),
      release: Effect.sync(() => {
        if (ours()) pending.delete(key)
        Deferred.doneUnsafe(settled, Effect.void)
      })
    }
  }

  const claim = (key: string): Effect.Effect<Claim> =>
    Effect.gen(function*() {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        const entry = done.get(key)
        if (entry !== undefined) {
          const { delivered, expiresAt } = decodeDone(entry)
          if (expiresAt > now) return { _tag: "Delivered", delivered }
          done.delete(key)
        }
        const inFlight = pending.get(key)
        if (inFlight !== undefined) {
          yield* Deferred.await(inFlight.settled)
          continue
        }
        const token = ++tokens
        const settled = Deferred.makeUnsafe<void>()
        pending.set(key, { token, settled })
        return claimed(key, token, settled)
      }
    })

  return DuplicateWindow.of({ claim })
}

const decodeDelivered = Schema.decodeUnknownOption(Schema.fromJsonString(Delivered))
const encodeDelivered = Schema.encodeSync(Schema.fromJsonString(Delivered))
const pendingPrefix = "pending:"
/** Deletes the key only while it still holds this caller's claim. */
const releaseScript = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`

const makeRedis = (redis: Redis.Redis["Service"], options: WindowOptions & { readonly prefix?: string }) => {
  const prefix = options.prefix ?? "smtp-gateway:dedupe:"
  const ttl = String(Duration.toMillis(Duration.fromInputUnsafe(options.ttl)))
  const hold = String(Duration.toMillis(Duration.fromInputUnsafe(options.hold)))

  const send = <A>(command: string, ...args: ReadonlyArray<string>) =>
    redis.send<A>(command, ...args).pipe(
      Effect.timeoutOrElse({
        duration: redisTimeout,
        orElse: () => Effect.fail(new Redis.RedisError({ cause: `${command} timed out` }))
      })
    )

  const warn = (what: string) => (error: Redis.RedisError) =>
    Effect.logWarning(`duplicate window: ${what} failed; going on without it`, error.message)

  const claimed = (key: string, pending: string | undefined): Claim => ({
    _tag: "Claimed",
    complete: (delivered) =>
      send("SET", key, encodeDelivered(delivered), "PX", ttl).pipe(Effect.asVoid, Effect.catch(warn("recording"))),
    release: pending === undefined
      ? Effect.void
      : send("EVAL", releaseScript, "1", key, pending).pipe(Effect.asVoid, Effect.catch(warn("releasing")))
  })

  const claim = (id: string): Effect.Effect<Claim> => {
    const key = prefix + id
    return Effect.gen(function*() {
      while (true) {
        const pending = pendingPrefix + crypto.randomUUID()
        const taken = yield* send<string | null>("SET", key, pending, "NX", "PX", hold)
        if (taken === "OK") return claimed(key, pending)
        const value = yield* send<string | null>("GET", key)
        if (value === null) continue // released or expired in between
        if (value.startsWith(pendingPrefix)) {
          yield* Effect.sleep(redisPollInterval)
          continue
        }
        const delivered = decodeDelivered(value)
        if (Option.isSome(delivered)) return { _tag: "Delivered", delivered: delivered.value } as const
        yield* Effect.logWarning("duplicate window: dropping an entry that does not decode")
        yield* send("DEL", key)
      }
    }).pipe(
      Effect.catch((error) => Effect.as(warn("lookup")(error), claimed(key, undefined)))
    )
  }

  return DuplicateWindow.of({ claim })
}

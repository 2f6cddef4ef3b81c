import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnGateway } from "../support/GatewayProcess.ts"
import { startRedis } from "../support/Redis.ts"
import { makeChaosUpstream } from "./ChaosUpstream.ts"
import { defaultOptions, formatReport, gatewayEnv, type RoundReport, runRound } from "./harness.ts"

/** Bounded for CI (4 rounds of 500 messages x 3 recipients); `npm run chaos` sends more. */
const options = { ...defaultOptions, messages: 500 }

/** What every round must show (design.md §2). */
const expectPromisesKept = (report: RoundReport) => {
  console.log(formatReport(report))
  assert.deepStrictEqual(report.problems, [])
  assert.isAbove(report.acknowledged, report.messages * 0.95)
  assert.strictEqual(report.permanentReplies, 0)
  if (report.honourKey) {
    assert.strictEqual(report.duplicatesStored, 0)
  } else {
    assert.strictEqual(report.duplicatesStored, report.duplicatesFromDroppedAnswers)
  }
}

/** Every fault happened, and both defences were used, so the rounds prove something. */
const expectEveryFault = (reports: ReadonlyArray<RoundReport>) => {
  const total = (count: (r: RoundReport) => number) => reports.reduce((n, r) => n + count(r), 0)
  assert.isAbove(total((r) => r.upstream.error500), 0, "no 500")
  assert.isAbove(total((r) => r.upstream.retryAfterShort), 0, "no 429 with a Retry-After inside the deadline")
  assert.isAbove(total((r) => r.upstream.retryAfterLong), 0, "no 429 with a Retry-After past the deadline")
  assert.isAbove(total((r) => r.upstream.hang), 0, "no hang")
  assert.isAbove(total((r) => r.upstream.reset), 0, "no reset")
  assert.isAbove(total((r) => r.upstream.dropped), 0, "no dropped answer")
  assert.isAbove(total((r) => r.noReply), 0, "no client hung up on a slow reply")
  assert.isAbove(total((r) => r.preventedByGateway), 0, "the duplicate window answered no retry")
  assert.isAbove(total((r) => r.upstream.replayed), 0, "the API never answered from its Idempotency-Key")
  assert.isAbove(total((r) => r.duplicatesStored), 0, "ignoring the key caused no duplicate, so it was not tested")
}

describe("Delivery under chaos", () => {
  it.live("keeps every promise of design.md §2 with one gateway process and its memory window", () =>
    Effect.gen(function*() {
      const upstream = yield* makeChaosUpstream()
      const gateway = yield* spawnGateway(gatewayEnv(upstream.url))
      const honoured = yield* runRound("memory-honoured", [gateway], upstream, true, options)
      expectPromisesKept(honoured)
      const ignored = yield* runRound("memory-ignored", [gateway], upstream, false, options)
      expectPromisesKept(ignored)
      expectEveryFault([honoured, ignored])
    }), { timeout: 180_000 })

  it.live("keeps them with two gateway processes sharing a Redis window", () =>
    Effect.gen(function*() {
      const redis = yield* startRedis
      const upstream = yield* makeChaosUpstream()
      const env = gatewayEnv(upstream.url, redis.url)
      const gateways = yield* Effect.all([spawnGateway(env), spawnGateway(env)], { concurrency: 2 })
      const honoured = yield* runRound("redis-honoured", gateways, upstream, true, options)
      expectPromisesKept(honoured)
      const ignored = yield* runRound("redis-ignored", gateways, upstream, false, options)
      expectPromisesKept(ignored)
      expectEveryFault([honoured, ignored])
    }), { timeout: 180_000 })
})

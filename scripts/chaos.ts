/**
 * `npm run chaos`: the chaos rounds of test/chaos at a larger scale (CHAOS_MESSAGES, default 5000 per
 * round; CHAOS_CLIENTS, default 40), printing each round's counts and exiting 1 when a promise of
 * design.md §2 was broken. A maintenance tool; `npm test` runs the bounded version.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { makeChaosUpstream } from "../test/chaos/ChaosUpstream.ts"
import { defaultOptions, formatReport, gatewayEnv, type RoundReport, runRound } from "../test/chaos/harness.ts"
import { spawnGateway } from "../test/support/GatewayProcess.ts"
import { startRedis } from "../test/support/Redis.ts"

const options = {
  ...defaultOptions,
  messages: Number(process.env.CHAOS_MESSAGES ?? 5000),
  clients: Number(process.env.CHAOS_CLIENTS ?? defaultOptions.clients)
}
const only = process.env.CHAOS_ONLY // "memory" or "redis"

const program = Effect.gen(function*() {
  const reports: Array<RoundReport> = []
  const round = (report: RoundReport) =>
    Effect.sync(() => {
      console.log(formatReport(report))
      for (const problem of report.problems.slice(0, 20)) console.log(`  PROBLEM ${problem}`)
      reports.push(report)
    })
  const upstream = yield* makeChaosUpstream()
  if (only !== "redis") {
    yield* Effect.scoped(Effect.gen(function*() {
      const gateway = yield* spawnGateway(gatewayEnv(upstream.url))
      yield* Effect.flatMap(runRound("memory-honoured", [gateway], upstream, true, options), round)
      yield* Effect.flatMap(runRound("memory-ignored", [gateway], upstream, false, options), round)
    }))
  }
  if (only !== "memory") {
    yield* Effect.scoped(Effect.gen(function*() {
      const redis = yield* startRedis
      const env = gatewayEnv(upstream.url, redis.url)
      const gateways = yield* Effect.all([spawnGateway(env), spawnGateway(env)], { concurrency: 2 })
      yield* Effect.flatMap(runRound("redis-honoured", gateways, upstream, true, options), round)
      yield* Effect.flatMap(runRound("redis-ignored", gateways, upstream, false, options), round)
    }))
  }
  const broken = reports.reduce((n, r) => n + r.problems.length, 0)
  if (broken > 0) return yield* Effect.fail(new Error(`chaos: ${broken} broken promises`))
  console.log("chaos: every promise kept")
})

NodeRuntime.runMain(Effect.scoped(program))

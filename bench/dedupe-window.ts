/**
 * The in-memory duplicate window on its own: heap and RSS per entry once it holds its 100,000, and the
 * time of a claim + complete while it fills and once it is full (when writes evict the oldest).
 *
 *   node --expose-gc --import tsx bench/dedupe-window.ts
 */
import * as crypto from "node:crypto"
import { Effect } from "effect"
import { defaultCapacity as capacity, DuplicateWindow } from "../src/delivery/DuplicateWindow.ts"

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")

// a key as Delivery makes them (a sha256 in hex), ids shaped like the real ones
const key = (i: number) => crypto.createHash("sha256").update(String(i)).digest("hex")
const delivered = () => ({
  // as read from the API's JSON answer: one flat string (randomUUID's is a tree of 16 pieces)
  upstreamId: JSON.parse(JSON.stringify(crypto.randomUUID())) as string,
  // shaped as Submission's makeGatewayId makes them; importing Submission.ts would load most of the
  // gateway into this process and blur its RSS figure (1,200 bytes an entry instead of 450)
  gatewayId: (Date.now().toString(36).padStart(9, "0") + crypto.randomBytes(8).readBigUInt64BE().toString(36).slice(-10))
    .toUpperCase(),
  at: Date.now()
})

const deliver = (window: DuplicateWindow["Service"], i: number) =>
  Effect.gen(function*() {
    const claim = yield* window.claim(key(i))
    if (claim._tag !== "Claimed") throw new Error(`key ${i} was already delivered`)
    yield* claim.complete(delivered())
  })

const timed = (window: DuplicateWindow["Service"], from: number, count: number) =>
  Effect.gen(function*() {
    const started = performance.now()
    for (let i = from; i < from + count; i++) yield* deliver(window, i)
    return ((performance.now() - started) * 1000) / count
  })

const program = Effect.gen(function*() {
  const window = yield* DuplicateWindow
  gc()
  const before = process.memoryUsage()
  const filling = yield* timed(window, 0, capacity)
  gc()
  const after = process.memoryUsage()
  const full = yield* timed(window, capacity, capacity)
  console.log(`heap per entry ${((after.heapUsed - before.heapUsed) / capacity).toFixed(0)} B, ` +
    `RSS per entry ${((after.rss - before.rss) / capacity).toFixed(0)} B (${capacity.toLocaleString("en")} entries)`)
  console.log(`claim + complete: ${filling.toFixed(1)} µs while filling, ${full.toFixed(1)} µs when full ` +
    `(a sha256 and two random ids included)`)
})

await Effect.runPromise(Effect.provide(program, DuplicateWindow.layerMemory({ ttl: "1 day", hold: "35 seconds", capacity })))

/**
 * The stand-ins the benchmark's systems talk to, in one child process of their own (so their CPU is not
 * counted as the gateway's): an HTTP upstream answering at once and one answering after 20 ms (both
 * keep-alive, `200 {"id"}`), an OTLP/HTTP collector that accepts and drops, and the Cakemail stand-in of
 * test/support. `GET /stats` on either upstream port counts what arrived.
 * Usage: tsx bench/standins.ts <upstreamPort> <slowUpstreamPort> <collectorPort> <cakemailPort>
 */
import * as http from "node:http"
import { Effect, Scope } from "effect"
import { FakeCakemail } from "../test/support/FakeCakemail.ts"

const ports = process.argv.slice(2).map(Number)
const [upstreamPort, slowPort, collectorPort, cakemailPort] = ports
// every port is the runner's choice: a missing one would otherwise listen somewhere nobody looks
if (ports.length !== 4 || !ports.every((p) => Number.isInteger(p) && p > 0) || cakemailPort === undefined) {
  console.error("usage: tsx bench/standins.ts <upstreamPort> <slowUpstreamPort> <collectorPort> <cakemailPort>")
  process.exit(2)
}

const stats = { requests: 0, bytes: 0, maxBody: 0, cakemailEmails: 0, cakemailTokens: 0, cakemailFailures: 0, spans: 0, collectorBytes: 0 }

const upstream = (delayMs: number) =>
  http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (req.method === "GET" && req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify(stats))
      return
    }
    let size = 0
    req.on("data", (chunk: Buffer) => (size += chunk.length))
    req.on("end", () => {
      stats.requests++
      stats.bytes += size
      if (size > stats.maxBody) stats.maxBody = size
      const answer = () => {
        const body = JSON.stringify({ id: `up-${stats.requests}` })
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
        res.end(body)
      }
      if (delayMs > 0) setTimeout(answer, delayMs)
      else answer()
    })
  })

const collector = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  let size = 0
  req.on("data", (chunk: Buffer) => (size += chunk.length))
  req.on("end", () => {
    stats.spans++
    stats.collectorBytes += size
    res.writeHead(200, { "content-type": "application/json" })
    res.end("{}")
  })
})

const listen = (server: http.Server, port: number | undefined) =>
  new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()))

await listen(upstream(0), upstreamPort)
await listen(upstream(20), slowPort)
await listen(collector, collectorPort)

const scope = await Effect.runPromise(Scope.make())
const cakemail = await Effect.runPromise(
  FakeCakemail.make({
    host: "127.0.0.1",
    port: cakemailPort,
    onResponse: (request, status) => {
      if (request.path === "/v2/emails") {
        if (status === 201) stats.cakemailEmails++
        else stats.cakemailFailures++
      } else if (request.path === "/token") stats.cakemailTokens++
    }
  }).pipe(Scope.provide(scope))
)
// the stand-in records every request for tests; the benchmark only counts, so drop the records
setInterval(() => void Effect.runPromise(cakemail.clearRequests), 1000).unref()

process.stdout.write(`stand-ins ready: upstream ${upstreamPort}, slow ${slowPort}, collector ${collectorPort}, cakemail ${cakemailPort}\n`)
process.on("SIGTERM", () => process.exit(0))

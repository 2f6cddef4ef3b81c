/**
 * Large messages sent at once: the gateway (compiled, on its defaults in a fresh DATA_DIR) takes N
 * messages of ~24 MB (text, and 8 MB, 6 MB and 4 MB attachments, which nodemailer writes in base64) over N
 * connections at the same moment (STARTTLS + AUTH PLAIN), and prints the replies and the peak RSS growth
 * of its process (VmRSS sampled every 10 ms). What MAX_MESSAGE_MEMORY bounds.
 *
 *   npm run build && npx tsx bench/message-memory.ts [N] ['{"UPSTREAM":"http","MAX_MESSAGE_MEMORY":"67108864"}']
 *
 * The second argument is the gateway's extra environment; with UPSTREAM=http the messages go to an HTTP
 * stand-in in this process (answering 200 at once) instead of the outbox directory.
 * BENCH_CGROUP=<a cgroup directory> moves the gateway alone into that cgroup as it starts, to run it as
 * in a pod with a memory limit (cgroup v1: set memory.limit_in_bytes first; v2: memory.max).
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import nodemailer from "nodemailer"
import { freePort } from "./lib/proc.ts"

const n = Number(process.argv[2] ?? 10)
const extraEnv: Record<string, string> = JSON.parse(process.argv[3] ?? "{}")
const [smtpPort, httpPort, apiPort] = [await freePort(), await freePort(), await freePort()]

let posts = 0
const api = http.createServer((req, res) => {
  req.resume()
  req.on("end", () => {
    posts++
    res.writeHead(200, { "content-type": "application/json" })
    res.end(JSON.stringify({ id: `api-${posts}` }))
  })
})
await new Promise<void>((resolve) => api.listen(apiPort, "127.0.0.1", resolve))

const dir = mkdtempSync(path.join(os.tmpdir(), "message-memory-"))
const gateway = spawn(process.execPath, ["bin/smtp-gateway.js", "serve"], {
  cwd: path.join(import.meta.dirname, ".."),
  env: {
    ...process.env,
    DATA_DIR: dir,
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(smtpPort),
    HTTP_PORT: String(httpPort),
    LOG_LEVEL: "warn",
    MAX_CONNECTIONS_PER_IP: String(Math.max(10, n)),
    ...(extraEnv.UPSTREAM === "http" ? { UPSTREAM_URL: `http://127.0.0.1:${apiPort}/send` } : {}),
    ...extraEnv
  },
  stdio: ["ignore", "pipe", "pipe"]
})
const cgroup = process.env.BENCH_CGROUP
if (cgroup !== undefined && cgroup !== "") writeFileSync(path.join(cgroup, "cgroup.procs"), String(gateway.pid))
let output = ""
gateway.stdout.on("data", (d: Buffer) => (output += d.toString()))
gateway.stderr.on("data", (d: Buffer) => (output += d.toString()))
const password = await new Promise<string>((resolve, reject) => {
  const poll = setInterval(() => {
    const created = /with password "([^"]+)"/.exec(output)
    if (created !== null) {
      clearInterval(poll)
      resolve(created[1]!)
    } else if (gateway.exitCode !== null) {
      clearInterval(poll)
      reject(new Error(`the gateway exited:\n${output}`))
    }
  }, 50)
})
await new Promise((resolve) => setTimeout(resolve, 1500)) // listening, and settled

const rssMB = () => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${gateway.pid}/status`, "utf8"))![1]) / 1024
  } catch {
    return 0 // the gateway is gone
  }
}
const before = rssMB()
let peak = before
const sampler = setInterval(() => {
  peak = Math.max(peak, rssMB())
}, 10)

const pdf = Buffer.alloc(8_000_000, 7)
const png = Buffer.alloc(6_000_000, 9)
const csv = "x,y\n".repeat(1_000_000)
const replies = await Promise.all(Array.from({ length: n }, async (_, i) => {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtpPort,
    requireTLS: true,
    tls: { rejectUnauthorized: false },
    auth: { user: "smtp-user", pass: password }
  })
  try {
    const info = await transport.sendMail({
      from: `sender${i}@example.com`,
      to: "bob@example.net",
      subject: `large ${i}`,
      text: "three attachments",
      attachments: [
        { filename: "report.pdf", content: pdf },
        { filename: "chart.png", content: png },
        { filename: "data.csv", content: csv }
      ]
    })
    return info.response as string
  } catch (e) {
    const error = e as { response?: string; message: string }
    return error.response ?? error.message
  } finally {
    transport.close()
  }
}))
clearInterval(sampler)

const counted: Record<string, number> = {}
for (const reply of replies) {
  const shape = reply.replace(/queued as \S+/, "queued as <id>")
  counted[shape] = (counted[shape] ?? 0) + 1
}
console.log(`${n} messages at once, ${JSON.stringify(extraEnv)}`)
for (const [reply, count] of Object.entries(counted)) console.log(`  ${count} × ${reply}`)
console.log(`  RSS before ${before.toFixed(0)} MB, peak ${peak.toFixed(0)} MB: growth ${(peak - before).toFixed(0)} MB`)
if (gateway.exitCode !== null || gateway.signalCode !== null) {
  console.log(`  the gateway died: ${gateway.signalCode ?? `exit ${gateway.exitCode}`}`)
}

if (gateway.exitCode === null && gateway.signalCode === null) {
  gateway.kill("SIGTERM")
  await new Promise((resolve) => gateway.once("exit", resolve))
}
api.close()
rmSync(dir, { recursive: true, force: true })

/**
 * The Node systems under test: the gateway as in production (compiled dist/, LOG_LEVEL=info, metrics,
 * tracing to the collector stand-in), the bare smtp-server + mailparser sink, and the do-nothing
 * responder. Each runs as its own child process on a free loopback port.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync } from "node:fs"
import * as path from "node:path"
import { type Child, freePort, pollUntil, startChild, startedWhen, waitForPort } from "../lib/proc.ts"
import type { Environment, Running, StartOptions, System } from "./types.ts"

const tsx = ["--import", "tsx"]
let instances = 0

export const benchUser = { user: "bench", pass: "bench-password" }
const cakemailUser = { user: "alice@example.test", pass: "alice-secret" }

/** The upstream URL a system posts to for this run: the slow stand-in or the fast one. */
export const upstreamUrl = (env: Environment, options: StartOptions): string =>
  options.upstream === "slow" ? env.slowUpstreamUrl : env.upstreamUrl

/** A started system that takes the bench user's STARTTLS and AUTH in TLS mode only (every one but the gateway). */
export const runningAs = (port: number, tls: boolean, pids: () => ReadonlyArray<number>, stop: () => Promise<void>): Running => ({
  port,
  pids,
  starttls: tls,
  auth: tls ? benchUser : undefined,
  mailFrom: "sender@example.com",
  note: undefined,
  stop
})

/** Waits for a one-process system's port (stopping the child if it does not come up). */
const listening = async (child: Child, port: number, options: StartOptions, what: string, logDir: string): Promise<Running> => {
  await startedWhen(child, () => waitForPort(port), what, logDir)
  return runningAs(port, options.mode === "tls", () => [child.pid], async () => void (await child.stop()))
}

/**
 * BENCH_GATEWAY_ENV="NAME=value ...": settings that override the gateway's benchmark settings
 * (experiments), read once; a word without `=` stops the run rather than be dropped unseen.
 */
const gatewayEnvOverrides: Record<string, string> = Object.fromEntries(
  (process.env.BENCH_GATEWAY_ENV ?? "").split(" ").filter(Boolean).map((pair) => {
    const at = pair.indexOf("=")
    if (at <= 0) throw new Error(`BENCH_GATEWAY_ENV: "${pair}" is not NAME=value`)
    return [pair.slice(0, at), pair.slice(at + 1)]
  })
)
/** BENCH_NODE_FLAGS: extra Node/V8 flags for the gateway (experiments). */
const extraNodeFlags = (process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean)

/** Creates the gateway's users file once (the CLI, as an operator would). */
const usersFile = (env: Environment): string => {
  const file = path.join(env.work, "gateway-users.json")
  if (!existsSync(file)) {
    execFileSync(process.execPath, [path.join(env.repo, "bin/smtp-gateway.js"), "users", "add", benchUser.user, "--sender", "@example.com", "--api-key", "bench-api-key"], {
      input: `${benchUser.pass}\n`,
      env: { ...process.env, AUTH_USERS_FILE: file, DATA_DIR: path.join(env.work, "gateway-data") },
      stdio: ["pipe", "ignore", "inherit"]
    })
  }
  return file
}

/** Resolves once `url` answers 200; rejects after `timeoutMs`. */
const readyOver = (url: string, timeoutMs = 20_000): Promise<void> =>
  pollUntil(() => fetch(url).then((response) => response.status === 200, () => false), `${url} not ready`, timeoutMs)

/**
 * Starts a one-process SMTP sink that reads its settings from `<prefix>_PORT`, `_MODE`, `_USER` and `_PASS`
 * (bench/systems/sink.ts: SINK_, bench/peers/aiosmtpd_httpx.py: PEER_) and posts to UPSTREAM_URL.
 */
export const startSink = async (
  env: Environment,
  options: StartOptions,
  sink: {
    readonly name: string
    readonly command: string
    readonly args: ReadonlyArray<string>
    readonly cwd: string
    readonly prefix: string
    readonly env?: Record<string, string>
  }
): Promise<Running> => {
  const port = await freePort()
  const child = startChild(sink.command, sink.args, {
    cwd: sink.cwd,
    logFile: path.join(env.logDir, `${sink.name}-${++instances}.log`),
    env: {
      ...process.env,
      [`${sink.prefix}_PORT`]: String(port),
      [`${sink.prefix}_MODE`]: options.mode,
      UPSTREAM_URL: upstreamUrl(env, options),
      TLS_CERT_PATH: env.certPath,
      TLS_KEY_PATH: env.keyPath,
      [`${sink.prefix}_USER`]: benchUser.user,
      [`${sink.prefix}_PASS`]: benchUser.pass,
      ...sink.env
    }
  })
  return listening(child, port, options, sink.name, env.logDir)
}

export const gateway: System = {
  id: "gateway",
  label: "smtp-gateway",
  postsToUpstream: true,
  unavailable: async (env) => existsSync(path.join(env.repo, "dist/cli.js")) ? undefined : "dist/ is missing (npm run build)",
  start: async (env, options: StartOptions): Promise<Running> => {
    const [port, httpPort] = [await freePort(), await freePort()]
    const dataDir = path.join(env.work, "gateway-data")
    mkdirSync(dataDir, { recursive: true })
    const cakemail = options.upstream === "cakemail"
    const child = startChild(process.execPath, [...(options.nodeFlags ?? []), ...extraNodeFlags, path.join(env.repo, "bin/smtp-gateway.js"), "serve"], {
      cwd: env.work,
      logFile: path.join(env.logDir, `gateway-${++instances}.log`),
      env: {
        ...process.env,
        SMTP_HOST: "127.0.0.1",
        SMTP_PORT: String(port),
        SMTP_HOSTNAME: "bench.localhost",
        HTTP_HOST: "127.0.0.1",
        HTTP_PORT: String(httpPort),
        DATA_DIR: dataDir,
        TLS_CERT_PATH: env.certPath,
        TLS_KEY_PATH: env.keyPath,
        AUTH_BACKEND: cakemail ? "cakemail" : "file",
        AUTH_USERS_FILE: usersFile(env),
        UPSTREAM: cakemail ? "cakemail" : "http",
        UPSTREAM_URL: upstreamUrl(env, options),
        ...(cakemail ? { CAKEMAIL_API_URL: env.cakemailUrl } : {}),
        LOG_LEVEL: "info",
        LOG_FORMAT: "json",
        OTEL_EXPORTER_OTLP_ENDPOINT: env.collectorUrl,
        // the limits stay on, set above what one benchmark client sends
        MAX_CONNECTIONS: "20000",
        MAX_CONNECTIONS_PER_IP: "20000",
        RATE_LIMIT_PER_IP: "1000000000",
        RATE_LIMIT_PER_USER: "1000000000",
        ...gatewayEnvOverrides
      }
    })
    await startedWhen(child, async () => {
      await readyOver(`http://127.0.0.1:${httpPort}/health/ready`)
      await waitForPort(port)
    }, "the gateway", env.logDir)
    return {
      port,
      pids: () => [child.pid],
      starttls: true,
      auth: cakemail ? cakemailUser : benchUser,
      mailFrom: cakemail ? "alice@example.test" : "sender@example.com",
      note: options.mode === "plain" ? "STARTTLS+AUTH (the gateway has no plain mode)" : undefined,
      stop: async () => void (await child.stop(30_000))
    }
  }
}

/** bench/systems/sink.ts as the system `id`, with `extras` (its SINK_EXTRAS) when given. */
const sinkSystem = (id: string, label: string, extras?: string): System => ({
  id,
  label,
  postsToUpstream: true,
  unavailable: async () => undefined,
  start: (env, options) =>
    startSink(env, options, {
      name: id,
      command: process.execPath,
      args: [...tsx, ...(options.nodeFlags ?? []), path.join(env.repo, "bench/systems/sink.ts")],
      cwd: env.repo,
      prefix: "SINK",
      ...(extras === undefined ? {} : { env: { SINK_EXTRAS: extras, OTEL_EXPORTER_OTLP_ENDPOINT: env.collectorUrl } })
    })
})

export const sink = sinkSystem("sink", "bare smtp-server+mailparser+POST")

/**
 * The sink plus, in plain Node, work the gateway does beside the libraries: parsing in a worker thread,
 * its log lines, its spans (to the collector stand-in), a digest, a duplicate-window entry, an upstream
 * timeout and metrics (bench/systems/sink.ts, SINK_EXTRAS). A floor for the gateway's cost without Effect.
 */
export const sinkPlus = sinkSystem("sink-plus", "sink + worker, logs, spans, checks", "worker,logs,spans,checks")

export const responder: System = {
  id: "responder",
  label: "do-nothing responder (ceiling)",
  postsToUpstream: false,
  unavailable: async () => undefined,
  start: async (env, options) => {
    const port = await freePort()
    const child = startChild(process.execPath, [...tsx, path.join(env.repo, "bench/systems/responder.ts")], {
      cwd: env.repo,
      logFile: path.join(env.logDir, `responder-${++instances}.log`),
      env: { ...process.env, RESPONDER_PORT: String(port), TLS_CERT_PATH: env.certPath, TLS_KEY_PATH: env.keyPath }
    })
    return listening(child, port, options, "the responder", env.logDir)
  }
}

/**
 * The Node systems under test: the gateway as in production (compiled dist/, LOG_LEVEL=info, metrics,
 * tracing to the collector stand-in), the bare smtp-server + mailparser sink, and the do-nothing
 * responder. Each runs as its own child process on a free loopback port.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync } from "node:fs"
import * as path from "node:path"
import { type Child, freePort, sleep, startChild, waitForPort } from "../lib/proc.ts"
import type { Environment, Running, StartOptions, System } from "./types.ts"

const tsx = ["--import", "tsx"]
let instances = 0

export const benchUser = { user: "bench", pass: "bench-password" }
const cakemailUser = { user: "alice@example.test", pass: "alice-secret" }

/** The upstream URL a system posts to for this run: the slow stand-in or the fast one. */
export const upstreamUrl = (env: Environment, options: StartOptions): string =>
  options.upstream === "slow" ? env.slowUpstreamUrl : env.upstreamUrl

/** Waits for a one-process system's port; it wants STARTTLS and AUTH as the bench user in TLS mode only. */
export const listening = async (child: Child, port: number, options: StartOptions): Promise<Running> => {
  await waitForPort(port)
  return {
    port,
    pids: () => [child.pid],
    starttls: options.mode === "tls",
    auth: options.mode === "tls" ? benchUser : undefined,
    mailFrom: "sender@example.com",
    note: undefined,
    stop: async () => void (await child.stop())
  }
}

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

const readyOver = async (url: string, timeoutMs = 20_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const response = await fetch(url)
      if (response.status === 200) return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} not ready after ${timeoutMs} ms`)
    await sleep(50)
  }
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
    if (cakemail && env.cakemailUrl === undefined) throw new Error("the Cakemail stand-in is not running")
    const child = startChild(process.execPath, [...(options.nodeFlags ?? []), path.join(env.repo, "bin/smtp-gateway.js"), "serve"], {
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
        ...(cakemail && env.cakemailUrl !== undefined ? { CAKEMAIL_API_URL: env.cakemailUrl } : {}),
        LOG_LEVEL: "info",
        LOG_FORMAT: "json",
        OTEL_EXPORTER_OTLP_ENDPOINT: env.collectorUrl,
        // the limits stay on, set above what one benchmark client sends
        MAX_CONNECTIONS: "20000",
        MAX_CONNECTIONS_PER_IP: "20000",
        RATE_LIMIT_PER_IP: "1000000000",
        RATE_LIMIT_PER_USER: "1000000000"
      }
    })
    try {
      await Promise.race([
        readyOver(`http://127.0.0.1:${httpPort}/health/ready`),
        child.exited.then((code) => Promise.reject(new Error(`the gateway exited (${code}) at startup; see ${env.logDir}`)))
      ])
      await waitForPort(port)
    } catch (error) {
      await child.stop()
      throw error
    }
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

export const sink: System = {
  id: "sink",
  label: "bare smtp-server+mailparser+POST",
  postsToUpstream: true,
  unavailable: async () => undefined,
  start: async (env, options) => {
    const port = await freePort()
    const child = startChild(process.execPath, [...tsx, ...(options.nodeFlags ?? []), path.join(env.repo, "bench/systems/sink.ts")], {
      cwd: env.repo,
      logFile: path.join(env.logDir, `sink-${++instances}.log`),
      env: {
        ...process.env,
        SINK_PORT: String(port),
        SINK_MODE: options.mode,
        UPSTREAM_URL: upstreamUrl(env, options),
        TLS_CERT_PATH: env.certPath,
        TLS_KEY_PATH: env.keyPath,
        SINK_USER: benchUser.user,
        SINK_PASS: benchUser.pass
      }
    })
    return listening(child, port, options)
  }
}

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
    return listening(child, port, options)
  }
}

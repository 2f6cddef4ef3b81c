/**
 * Optional peers measured side by side when they are installed here (never required): Haraka with an
 * HTTP queue plugin (npm, in a directory outside the repo: BENCH_HARAKA_DIR, default /tmp/peers/haraka),
 * and aiosmtpd + httpx (the seed's stack; Debian's python3-aiosmtpd and python3-httpx). Their
 * configuration is written into the run's work directory. Postfix is not measured (bench/README.md).
 */
import { execFileSync } from "node:child_process"
import { copyFileSync, cpSync, existsSync, mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { freePort, processTree, startChild, startedWhen, waitForPort } from "../lib/proc.ts"
import { benchUser, startSink, upstreamUrl } from "./node.ts"
import type { Running, System } from "./types.ts"

let instances = 0
const python = "/usr/bin/python3"
const harakaDir = process.env.BENCH_HARAKA_DIR ?? "/tmp/peers/haraka"
const harakaBin = path.join(harakaDir, "node_modules/Haraka/bin/haraka")

const works = (command: string, args: ReadonlyArray<string>): boolean => {
  try {
    execFileSync(command, args, { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

export const aiosmtpd: System = {
  id: "aiosmtpd",
  label: "aiosmtpd + httpx (seed's stack)",
  postsToUpstream: true,
  unavailable: async () =>
    works(python, ["-c", "import aiosmtpd, httpx"]) ? undefined : "python3-aiosmtpd / python3-httpx not installed (apt-get install python3-aiosmtpd python3-httpx)",
  start: (env, options) =>
    startSink(env, options, {
      name: "aiosmtpd",
      command: python,
      args: [path.join(env.repo, "bench/peers/aiosmtpd_httpx.py")],
      cwd: env.work,
      prefix: "PEER"
    })
}

export const haraka: System = {
  id: "haraka",
  label: "Haraka + HTTP queue plugin",
  postsToUpstream: true,
  unavailable: async () => existsSync(harakaBin) ? undefined : `Haraka not installed in ${harakaDir} (npm install Haraka there)`,
  start: async (env, options): Promise<Running> => {
    const port = await freePort()
    const dir = path.join(env.work, `haraka-${++instances}`)
    const config = path.join(dir, "config")
    mkdirSync(path.join(dir, "plugins"), { recursive: true })
    // Haraka's own defaults first (it reads many files), then ours
    cpSync(path.join(harakaDir, "node_modules/Haraka/config"), config, { recursive: true })
    copyFileSync(path.join(env.repo, "bench/peers/haraka/queue_http.js"), path.join(dir, "plugins/queue_http.js"))
    const tls = options.mode === "tls"
    writeFileSync(path.join(config, "smtp.ini"), `[main]\nlisten=127.0.0.1:${port}\n; one process, as every system here\nnodes=0\n`)
    writeFileSync(path.join(config, "plugins"), [...(tls ? ["tls", "auth/flat_file"] : []), "queue_http"].join("\n") + "\n")
    writeFileSync(path.join(config, "queue_http.ini"), `url=${upstreamUrl(env, options)}\n`)
    writeFileSync(path.join(config, "loglevel"), "info\n")
    writeFileSync(path.join(config, "me"), "bench.localhost\n")
    writeFileSync(path.join(config, "databytes"), "26214400\n")
    if (tls) {
      // Haraka makes a 2048-bit dhparams file on first start (slow): make it once per run, the quick way
      const dhparams = path.join(env.work, "haraka-dhparams.pem")
      if (!existsSync(dhparams)) execFileSync("openssl", ["dhparam", "-dsaparam", "-out", dhparams, "2048"], { stdio: "ignore" })
      copyFileSync(dhparams, path.join(config, "dhparams.pem"))
      copyFileSync(env.keyPath, path.join(config, "tls_key.pem"))
      copyFileSync(env.certPath, path.join(config, "tls_cert.pem"))
      writeFileSync(path.join(config, "auth_flat_file.ini"), `[core]\nmethods=PLAIN,LOGIN\n\n[users]\n${benchUser.user}=${benchUser.pass}\n`)
    }
    const child = startChild(process.execPath, [harakaBin, "-c", dir], {
      cwd: dir,
      logFile: path.join(env.logDir, `haraka-${instances}.log`),
      env: { ...process.env, NODE_PATH: path.join(harakaDir, "node_modules") }
    })
    await startedWhen(child, () => waitForPort(port), "Haraka", env.logDir)
    return {
      port,
      pids: () => processTree(child.pid),
      starttls: tls,
      auth: tls ? benchUser : undefined,
      mailFrom: "sender@example.com",
      note: undefined,
      stop: async () => void (await child.stop())
    }
  }
}

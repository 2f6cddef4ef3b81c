/**
 * Process helpers for the benchmark: CPU seconds and RSS of a process from /proc (Linux only), an RSS
 * poller, free loopback ports, polling until something is ready (a port), and starting/stopping child
 * processes (a failed start stops its child). Nothing here talks SMTP.
 */
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process"
import { openSync, readFileSync } from "node:fs"
import * as net from "node:net"

/** Linux USER_HZ; /proc/<pid>/stat counts CPU time in these ticks. */
const clockTicks = 100

/**
 * User + system CPU seconds of a process and of its children that have exited and been waited for
 * (from /proc/<pid>/stat): Postfix's master replaces an smtpd after 100 connections, and the time of the
 * one that exited would otherwise be lost.
 */
const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // the command name (field 2) may hold spaces: count fields after its closing parenthesis
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // utime, stime, cutime, cstime
  return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / clockTicks
}

/** A field of /proc/<pid>/status in bytes (VmRSS, VmHWM); 0 when the process is gone. */
export const statusBytes = (pid: number, field: "VmRSS" | "VmHWM"): number => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match?.[1] === undefined ? 0 : Number(match[1]) * 1024
  } catch {
    return 0
  }
}

/** Every descendant's pid (for multi-process peers such as Postfix), from /proc/<pid>/task/<pid>/children. */
export const processTree = (pid: number): Array<number> => {
  const out = [pid]
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!
    try {
      const children = readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim()
      if (children !== "") out.push(...children.split(" ").map(Number))
    } catch {
      // gone
    }
  }
  return out
}

/** CPU seconds summed over a set of pids; a pid that is gone counts 0. */
export const cpuSecondsOf = (pids: ReadonlyArray<number>): number =>
  pids.reduce((sum, pid) => {
    try {
      return sum + cpuSeconds(pid)
    } catch {
      return sum
    }
  }, 0)

export interface RssPoller {
  /** Stops polling; the highest RSS seen (bytes) and every sample. */
  readonly stop: () => { readonly peak: number; readonly samples: ReadonlyArray<{ readonly t: number; readonly rss: number }> }
}

/** Samples the summed RSS of `pids()` every `everyMs`. */
export const pollRss = (pids: () => ReadonlyArray<number>, everyMs = 20): RssPoller => {
  const samples: Array<{ t: number; rss: number }> = []
  let peak = 0
  const t0 = performance.now()
  const sample = () => {
    const rss = pids().reduce((sum, pid) => sum + statusBytes(pid, "VmRSS"), 0)
    if (rss > peak) peak = rss
    samples.push({ t: (performance.now() - t0) / 1000, rss })
  }
  sample()
  const timer = setInterval(sample, everyMs)
  return {
    stop: () => {
      clearInterval(timer)
      sample()
      return { peak, samples }
    }
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Tries `attempt` every 50 ms until it gives true; rejects with "`what` after `timeoutMs` ms" once the time is up. */
export const pollUntil = async (attempt: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await attempt()) return
    if (Date.now() > deadline) throw new Error(`${what} after ${timeoutMs} ms`)
    await sleep(50)
  }
}

/** Resolves once something accepts TCP connections on the port; rejects after `timeoutMs`. */
export const waitForPort = (port: number, timeoutMs = 20_000): Promise<void> =>
  pollUntil(
    () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect({ host: "127.0.0.1", port })
        socket.once("connect", () => {
          socket.destroy()
          resolve(true)
        })
        socket.once("error", () => resolve(false))
      }),
    `nothing listens on 127.0.0.1:${port}`,
    timeoutMs
  )

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface Child {
  readonly process: ChildProcess
  readonly pid: number
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (or signal name). */
  readonly stop: (graceMs?: number) => Promise<string>
  readonly exited: Promise<string>
}

/** Starts a child whose stdout and stderr go to `logFile`. */
export const startChild = (command: string, args: ReadonlyArray<string>, options: SpawnOptions & { readonly logFile: string }): Child => {
  const log = openSync(options.logFile, "a")
  const child = spawn(command, args, { ...options, stdio: ["ignore", log, log] })
  if (child.pid === undefined) throw new Error(`cannot start ${command}`)
  const exited = new Promise<string>((resolve) =>
    child.once("exit", (code, signal) => resolve(signal ?? String(code)))
  )
  const stop = async (graceMs = 10_000): Promise<string> => {
    if (child.exitCode !== null || child.signalCode !== null) return exited
    child.kill("SIGTERM")
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    const result = await exited
    clearTimeout(timer)
    return result
  }
  return { process: child, pid: child.pid, stop, exited }
}

/**
 * Waits for `ready` while watching the child: if the child exits first or `ready` fails (e.g. times
 * out), the system is stopped (`stop`, the child by default), so a failed start leaves no process
 * behind, and the promise rejects.
 */
export const startedWhen = async (
  child: Child,
  ready: () => Promise<unknown>,
  what: string,
  logDir: string,
  stop: () => Promise<unknown> = () => child.stop()
): Promise<void> => {
  try {
    await Promise.race([
      ready(),
      child.exited.then((code) => Promise.reject(new Error(`${what} exited (${code}) at startup; see ${logDir}`)))
    ])
  } catch (error) {
    await stop()
    throw error
  }
}

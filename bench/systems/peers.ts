/**
 * Optional peers measured side by side when they are installed here (never required): Haraka with an
 * HTTP queue plugin (npm, in a directory outside the repo: BENCH_HARAKA_DIR, default /tmp/peers/haraka),
 * aiosmtpd + httpx (the seed's stack; Debian's python3-aiosmtpd and python3-httpx), and Postfix with its
 * disk queue (Debian's postfix, libsasl2-modules and sasl2-bin; a private instance, started as root).
 * Their configuration is written into the run's work directory (Postfix's into a directory of its own).
 */
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { freePort, processTree, startChild, startedWhen, waitForPort } from "../lib/proc.ts"
import { benchUser, runningAs, startSink, upstreamUrl } from "./node.ts"
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
    return runningAs(port, tls, () => processTree(child.pid), async () => void (await child.stop()))
  }
}

// ---- Postfix ---------------------------------------------------------------------------------------

const postfixBin = "/usr/sbin/postfix"
const saslpasswd = "/usr/sbin/saslpasswd2"

/**
 * Postfix's own services (master.cf), without chroot: the instance lives in a temporary directory.
 * smtpd listens on the port the runner chose; tlsmgr is needed for STARTTLS, postlog for the log.
 */
const postfixServices = (port: number) =>
  [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    "pickup unix n - n 60 1 pickup",
    "cleanup unix n - n - 0 cleanup",
    "qmgr unix n - n 300 1 qmgr",
    "tlsmgr unix - - n 1000? 1 tlsmgr",
    "rewrite unix - - n - - trivial-rewrite",
    "bounce unix - - n - 0 bounce",
    "defer unix - - n - 0 bounce",
    "trace unix - - n - 0 bounce",
    "verify unix - - n - 1 verify",
    "flush unix n - n 1000? 0 flush",
    "proxymap unix - - n - - proxymap",
    "showq unix n - n - - showq",
    "error unix - - n - - error",
    "retry unix - - n - - error",
    "discard unix - - n - - discard",
    "anvil unix - - n - 1 anvil",
    "scache unix - - n - 1 scache",
    "postlog unix-dgram n - n - 1 postlogd"
  ].join("\n") + "\n"

/**
 * Postfix as the "disk queue" column: every message is written (and fsynced) to its queue,
 * then the queue manager hands it to the `discard` transport. It posts nothing to the HTTP stand-in:
 * it measures what an established MTA costs to take a message into its own queue. In `tls` mode it
 * offers STARTTLS with the run's certificate and AUTH PLAIN/LOGIN (Cyrus SASL, a sasldb file), and
 * relays only for an authenticated client, as a submission service does.
 */
export const postfix: System = {
  id: "postfix",
  label: "Postfix (disk queue)",
  postsToUpstream: false,
  unavailable: async () => {
    if (!existsSync(postfixBin) || !existsSync(saslpasswd)) {
      return "postfix / sasl2-bin not installed (apt-get install postfix libsasl2-modules sasl2-bin)"
    }
    return process.getuid?.() === 0 ? undefined : "a private Postfix instance is started as root"
  },
  start: async (env, options): Promise<Running> => {
    const port = await freePort()
    // outside the run's work directory, which only root may enter
    const dir = mkdtempSync(path.join(os.tmpdir(), `smtp-gateway-bench-postfix-${++instances}-`))
    chmodSync(dir, 0o755)
    const config = path.join(dir, "conf")
    const tls = options.mode === "tls"
    for (const sub of ["queue", "data", "conf/sasl"]) mkdirSync(path.join(dir, sub), { recursive: true })
    // Postfix's daemons run as the postfix user: its data directory and the sasldb are theirs
    const postfixUid = Number(execFileSync("id", ["-u", "postfix"], { encoding: "utf8" }).trim())
    const postfixGid = Number(execFileSync("id", ["-g", "postfix"], { encoding: "utf8" }).trim())
    chownSync(path.join(dir, "data"), postfixUid, postfixGid)
    const settings = [
      "compatibility_level = 3.6",
      `queue_directory = ${path.join(dir, "queue")}`,
      `data_directory = ${path.join(dir, "data")}`,
      "command_directory = /usr/sbin",
      "daemon_directory = /usr/lib/postfix/sbin",
      "shlib_directory = /usr/lib/postfix",
      "mail_owner = postfix",
      "setgid_group = postdrop",
      "myhostname = bench.localhost",
      "mydestination =",
      "inet_interfaces = 127.0.0.1",
      "inet_protocols = ipv4",
      "mynetworks = 127.0.0.0/8",
      "default_transport = discard",
      "relay_transport = discard",
      "local_transport = discard",
      "maillog_file = /dev/stdout",
      "message_size_limit = 26214400",
      "smtpd_banner = $myhostname ESMTP",
      "biff = no",
      ...(tls
        ? [
          `smtpd_tls_cert_file = ${env.certPath}`,
          `smtpd_tls_key_file = ${env.keyPath}`,
          "smtpd_tls_security_level = may",
          "smtpd_tls_auth_only = yes",
          "smtpd_sasl_auth_enable = yes",
          "smtpd_sasl_type = cyrus",
          "smtpd_sasl_path = smtpd",
          `cyrus_sasl_config_path = ${path.join(config, "sasl")}`,
          "smtpd_sasl_local_domain = bench.localhost",
          "smtpd_relay_restrictions = permit_sasl_authenticated, reject"
        ]
        : ["smtpd_relay_restrictions = permit_mynetworks, reject"])
    ]
    writeFileSync(path.join(config, "main.cf"), settings.join("\n") + "\n")
    writeFileSync(path.join(config, "master.cf"), postfixServices(port))
    if (tls) {
      const sasldb = path.join(config, "sasldb2")
      writeFileSync(
        path.join(config, "sasl/smtpd.conf"),
        `pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: ${sasldb}\n`
      )
      execFileSync(saslpasswd, ["-p", "-c", "-f", sasldb, "-u", "bench.localhost", benchUser.user], { input: benchUser.pass })
      chownSync(sasldb, postfixUid, postfixGid)
    }
    execFileSync(postfixBin, ["-c", config, "set-permissions"], { stdio: "ignore" })
    const child = startChild(postfixBin, ["-c", config, "start-fg"], {
      cwd: dir,
      logFile: path.join(env.logDir, `postfix-${instances}.log`)
    })
    // the master outlives a stopped `postfix start-fg`: `postfix stop` ends it, then the directory goes
    const stop = async () => {
      try {
        execFileSync(postfixBin, ["-c", config, "stop"], { stdio: "ignore" })
      } catch {
        // already stopped
      }
      await child.stop()
      rmSync(dir, { recursive: true, force: true })
    }
    await startedWhen(child, () => waitForPort(port), "Postfix", env.logDir, stop)
    // its processes: postfix ▸ postfix-script ▸ master ▸ smtpd, cleanup, qmgr, discard, ...
    return runningAs(port, tls, () => processTree(child.pid), stop)
  }
}

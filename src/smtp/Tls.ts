/**
 * Certificates: the key and certificate the SMTP listeners present, from TLS_CERT_PATH/TLS_KEY_PATH
 * (watched: renewed files are picked up without a restart) or else a self-signed pair made once in
 * DATA_DIR/tls and reused; plus the TLS settings every listener uses (TLS 1.2+, Mozilla
 * "intermediate" ciphers; docs/tls.md). Client renegotiation is disabled per connection, in
 * Commands.secured. It does not listen.
 */
import * as crypto from "node:crypto"
import * as fsWatch from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as path from "node:path"
import type * as tls from "node:tls"
import { Clock, Context, Duration, Effect, Layer, Option, Ref, Schema, type Scope } from "effect"
import { generate } from "selfsigned"
import { GatewayConfig } from "../Config.ts"

export interface CertificatePair {
  /** PEM private key. */
  readonly key: string
  /** PEM certificate (chain). */
  readonly cert: string
}

/** The certificate could not be read, checked or created; startup fails with this message. */
export class TlsSetupError extends Schema.TaggedError<TlsSetupError>()("TlsSetupError", {
  message: Schema.String
}) {}

/**
 * Mozilla "intermediate" TLS 1.2 suites (ECDHE with AES-GCM or CHACHA20-POLY1305). TLS 1.3 suites
 * are not listed, so Node keeps its TLS 1.3 defaults.
 */
const intermediateCiphers = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305"
].join(":")

/** The secure-context options of every SMTP listener. */
export const tlsOptions = (pair: CertificatePair): tls.SecureContextOptions => ({
  key: pair.key,
  cert: pair.cert,
  minVersion: "TLSv1.2",
  ciphers: intermediateCiphers,
  honorCipherOrder: false
})

/** A self-signed certificate is renewed when it has less than this left. */
const renewBefore = 7 * 24 * 60 * 60 * 1000
const validFor = 365 * 24 * 60 * 60 * 1000

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

const readPair = (certPath: string, keyPath: string) =>
  Effect.tryPromise({
    try: async () => ({ cert: await fs.readFile(certPath, "utf8"), key: await fs.readFile(keyPath, "utf8") }),
    catch: (error) =>
      new TlsSetupError({
        message: `Cannot read the TLS certificate (${certPath}) or key (${keyPath}): ${describe(error)}; ` +
          "check TLS_CERT_PATH and TLS_KEY_PATH"
      })
  })

/** Key and certificate must be PEM and belong together. */
const checkPair = (pair: CertificatePair, where: string) =>
  Effect.try({
    try: () => {
      const certificate = new crypto.X509Certificate(pair.cert)
      if (!certificate.checkPrivateKey(crypto.createPrivateKey(pair.key))) throw new Error("the key does not match the certificate")
      return certificate
    },
    catch: (error) => new TlsSetupError({ message: `Unusable TLS certificate or key in ${where}: ${describe(error)}` })
  })

const generateSelfSigned = Effect.fnUntraced(function*(hostname: string) {
  const now = yield* Clock.currentTimeMillis
  const names = [...new Set([hostname, "localhost"])].filter((name) => net.isIP(name) === 0)
  const ips = [...new Set([hostname, "127.0.0.1", "::1"])].filter((name) => net.isIP(name) !== 0)
  const pems = yield* Effect.tryPromise({
    try: () =>
      generate([{ name: "commonName", value: hostname }], {
        keyType: "rsa",
        keySize: 2048,
        algorithm: "sha256",
        notBeforeDate: new Date(now - 60_000),
        notAfterDate: new Date(now + validFor),
        extensions: [
          { name: "basicConstraints", cA: false },
          { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
          { name: "extKeyUsage", serverAuth: true },
          {
            name: "subjectAltName",
            altNames: [
              ...names.map((value) => ({ type: 2 as const, value })),
              ...ips.map((ip) => ({ type: 7 as const, ip }))
            ]
          }
        ]
      }),
    catch: (error) => new TlsSetupError({ message: `Cannot generate a self-signed certificate: ${describe(error)}` })
  })
  return { key: pems.private, cert: pems.cert }
})

/** Reuses DATA_DIR/tls/{cert,key}.pem while valid for `hostname`, else makes and writes a new pair. */
const selfSigned = Effect.fnUntraced(function*(dir: string, hostname: string) {
  const certPath = path.join(dir, "cert.pem")
  const keyPath = path.join(dir, "key.pem")
  const now = yield* Clock.currentTimeMillis
  const existing = yield* readPair(certPath, keyPath).pipe(
    Effect.flatMap((pair) =>
      checkPair(pair, dir).pipe(
        Effect.map((certificate) =>
          Date.parse(certificate.validTo) - now > renewBefore && (net.isIP(hostname) === 0 ? certificate.checkHost(hostname) : certificate.checkIP(hostname)) !== undefined
            ? Option.some(pair)
            : Option.none()
        )
      )
    ),
    Effect.orElseSucceed(() => Option.none<CertificatePair>())
  )
  if (Option.isSome(existing)) return existing.value

  const pair = yield* generateSelfSigned(hostname)
  yield* Effect.tryPromise({
    try: async () => {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 })
      await fs.writeFile(keyPath, pair.key, { mode: 0o600 })
      await fs.chmod(keyPath, 0o600)
      await fs.writeFile(certPath, pair.cert, { mode: 0o644 })
    },
    catch: (error) =>
      new TlsSetupError({ message: `Cannot write the self-signed certificate to ${dir}: ${describe(error)}; set DATA_DIR to a writable directory` })
  })
  yield* Effect.logInfo("created a self-signed TLS certificate").pipe(
    Effect.annotateLogs({ path: certPath, hostname })
  )
  return pair
})

/** The files are read again this often even without a change notice (a missed inotify event, NFS). */
const reloadPollInterval = Duration.seconds(60)
/** After a change notice, wait this long for the writer to finish (key and certificate are two files). */
const reloadSettle = Duration.millis(200)

/**
 * Calls `changed` whenever something happens in one of `dirs` (Kubernetes renews a mounted secret by
 * swapping the `..data` symlink in the directory, so the directory is watched, not the files), and
 * every `reloadPollInterval`. Runs until the scope closes.
 */
const watchDirectories = (dirs: ReadonlyArray<string>, changed: Effect.Effect<void>) =>
  Effect.gen(function*() {
    let pending = false
    let wake: (() => void) | undefined
    const notify = () => {
      pending = true
      wake?.()
    }
    for (const dir of dirs) {
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          try {
            const watcher = fsWatch.watch(dir, { persistent: false }, notify)
            watcher.on("error", () => undefined) // the directory went away; the poll goes on
            return watcher
          } catch {
            return undefined // not watchable here: the poll alone
          }
        }),
        (watcher) => Effect.sync(() => watcher?.close())
      )
    }
    const nextNotice = Effect.callback<void>((resume) => {
      if (pending) return resume(Effect.void)
      wake = () => resume(Effect.void)
      return Effect.sync(() => {
        wake = undefined
      })
    })
    yield* Effect.forkScoped(Effect.forever(
      Effect.gen(function*() {
        yield* Effect.raceFirst(nextNotice, Effect.sleep(reloadPollInterval))
        yield* Effect.sleep(reloadSettle)
        pending = false
        yield* changed
      })
    ))
  })

export class Certificates extends Context.Service<Certificates, {
  /** The pair to present now (a reload replaces it). */
  readonly current: Effect.Effect<CertificatePair>
  readonly source: "files" | "self-signed"
  /**
   * Watches TLS_CERT_PATH and TLS_KEY_PATH for the scope's lifetime: when they hold a new, valid pair,
   * it becomes current and `apply` gets it. A half-written or mismatched pair is logged and skipped
   * (the next change or poll tries again). Does nothing for a self-signed certificate.
   */
  readonly watch: (apply: (pair: CertificatePair) => Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
}>()("smtp-gateway/smtp/Certificates") {
  static readonly layer = Layer.effect(
    Certificates,
    Effect.gen(function*() {
      const { smtp, tls: settings } = yield* GatewayConfig
      const files = Option.all({ cert: settings.certPath, key: settings.keyPath })
      const load: Effect.Effect<CertificatePair, TlsSetupError> = Option.match(files, {
        onNone: () => selfSigned(settings.dir, smtp.hostname),
        onSome: ({ cert, key }) => Effect.tap(readPair(cert, key), (pair) => checkPair(pair, `${cert} / ${key}`))
      })
      const ref = yield* Ref.make(yield* load)
      const watch = (apply: (pair: CertificatePair) => Effect.Effect<void>) =>
        Option.match(files, {
          onNone: () => Effect.void,
          onSome: ({ cert, key }) =>
            watchDirectories(
              [...new Set([path.dirname(path.resolve(cert)), path.dirname(path.resolve(key))])],
              Effect.gen(function*() {
                const before = yield* Ref.get(ref)
                const next = yield* readPair(cert, key)
                if (next.cert === before.cert && next.key === before.key) return
                const certificate = yield* checkPair(next, `${cert} / ${key}`)
                yield* Ref.set(ref, next)
                yield* apply(next)
                yield* Effect.logInfo("TLS certificate reloaded").pipe(
                  Effect.annotateLogs({ path: cert, valid_to: certificate.validTo })
                )
              }).pipe(
                Effect.catchTag("TlsSetupError", (error) =>
                  Effect.logWarning("TLS certificate not reloaded; keeping the current one").pipe(
                    Effect.annotateLogs({ problem: error.message })
                  ))
              )
            )
        })
      return Certificates.of({
        current: Ref.get(ref),
        source: Option.isSome(files) ? "files" : "self-signed",
        watch
      })
    })
  )
}

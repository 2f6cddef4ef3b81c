import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { generate } from "selfsigned"
import { connect } from "../support/SmtpClient.ts"
import { startListener, testConfig } from "./harness.ts"

const makePair = (name: string) => generate([{ name: "commonName", value: name }], { keyType: "rsa", keySize: 2048, algorithm: "sha256" })
/** Made once for the file (RSA key generation is the slow part). */
const pairs = Promise.all([makePair("first.test"), makePair("second.test")])

/** A directory laid out like a Kubernetes secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<version>`. */
const writeVersion = (dir: string, version: string, pair: { readonly cert: string; readonly private: string }) => {
  const versionDir = path.join(dir, `..${version}`)
  fs.mkdirSync(versionDir)
  fs.writeFileSync(path.join(versionDir, "tls.crt"), pair.cert)
  fs.writeFileSync(path.join(versionDir, "tls.key"), pair.private)
  // the kubelet's atomic swap: a new symlink, renamed over ..data
  fs.symlinkSync(`..${version}`, path.join(dir, "..data_tmp"))
  fs.renameSync(path.join(dir, "..data_tmp"), path.join(dir, "..data"))
}

/** The common name of the certificate a new STARTTLS connection is shown. */
const presented = (port: number) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* connect({ port })
    yield* client.readReply
    yield* client.sendLine("EHLO client.test")
    yield* client.readReply
    yield* client.sendLine("STARTTLS")
    yield* client.readReply
    const socket: tls.TLSSocket = yield* client.startTls
    return String(socket.getPeerCertificate().subject.CN)
  }))

describe("TLS certificate reload", () => {
  it.live("presents a renewed certificate after Kubernetes swaps the secret's ..data symlink, without a restart", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-k8s-secret-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const [first, second] = yield* Effect.promise(() => pairs)
      writeVersion(dir, "2025_01_01", first)
      fs.symlinkSync("..data/tls.crt", path.join(dir, "tls.crt"))
      fs.symlinkSync("..data/tls.key", path.join(dir, "tls.key"))
      const { listener } = yield* startListener(testConfig({ TLS_CERT_PATH: path.join(dir, "tls.crt"), TLS_KEY_PATH: path.join(dir, "tls.key") }))
      assert.strictEqual(yield* presented(listener.port), "first.test")

      writeVersion(dir, "2025_02_01", second)
      let seen = ""
      for (let i = 0; i < 50 && seen !== "second.test"; i++) {
        yield* Effect.sleep("100 millis")
        seen = yield* presented(listener.port)
      }
      assert.strictEqual(seen, "second.test")
    }))

  it.live("keeps the current certificate when the files are replaced by a key that does not match", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-tls-reload-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const [first, second] = yield* Effect.promise(() => pairs)
      fs.writeFileSync(path.join(dir, "cert.pem"), first.cert)
      fs.writeFileSync(path.join(dir, "key.pem"), first.private)
      const { listener } = yield* startListener(testConfig({ TLS_CERT_PATH: path.join(dir, "cert.pem"), TLS_KEY_PATH: path.join(dir, "key.pem") }))
      fs.writeFileSync(path.join(dir, "cert.pem"), second.cert) // the key is still the first one
      yield* Effect.sleep("600 millis")
      assert.strictEqual(yield* presented(listener.port), "first.test")
      fs.writeFileSync(path.join(dir, "key.pem"), second.private)
      let seen = ""
      for (let i = 0; i < 50 && seen !== "second.test"; i++) {
        yield* Effect.sleep("100 millis")
        seen = yield* presented(listener.port)
      }
      assert.strictEqual(seen, "second.test")
    }))
})

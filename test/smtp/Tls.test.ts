import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option } from "effect"
import { GatewayConfig, type GatewayConfigShape } from "../../src/Config.ts"
import { Certificates, type CertificatePair, tlsOptions } from "../../src/smtp/Tls.ts"

/** Only the parts of the configuration Certificates reads. */
const config = (tlsSettings: GatewayConfigShape["tls"]) =>
  GatewayConfig.layerWith({
    smtp: { host: "127.0.0.1", port: 0, smtpsPort: Option.none(), hostname: "mx.test" },
    tls: tlsSettings
  } as GatewayConfigShape)

const certificates = (tlsSettings: GatewayConfigShape["tls"]) =>
  Effect.gen(function*() {
    const c = yield* Certificates
    return { pair: yield* c.current, source: c.source }
  }).pipe(
    Effect.provide(Certificates.layer.pipe(Layer.provide(config(tlsSettings))))
  )

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "smtp-gateway-tls-test-"))

/** A TLS server with the gateway's settings; resolves with what a client with `client` options agreed. */
const handshake = (pair: CertificatePair, client: tls.ConnectionOptions) =>
  Effect.callback<{ protocol: string | null; cipher: string }, Error>((resume) => {
    const server = tls.createServer(tlsOptions(pair), (socket) => socket.end())
    server.on("tlsClientError", () => undefined)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...client }, () => {
        resume(Effect.succeed({ protocol: socket.getProtocol(), cipher: socket.getCipher().name }))
        socket.destroy()
        server.close()
      })
      socket.on("error", (error) => {
        resume(Effect.fail(error))
        server.close()
      })
    })
  })

describe("Certificates", () => {
  it.live("makes a self-signed certificate for the host name once, key readable by its owner only, and reuses it", () =>
    Effect.gen(function*() {
      const dir = path.join(tempDir(), "tls")
      const first = yield* certificates({ certPath: Option.none(), keyPath: Option.none(), dir })
      assert.strictEqual(first.source, "self-signed")
      assert.strictEqual(fs.statSync(path.join(dir, "key.pem")).mode & 0o777, 0o600)
      const x509 = new crypto.X509Certificate(fs.readFileSync(path.join(dir, "cert.pem")))
      assert.isDefined(x509.checkHost("mx.test"))
      assert.isDefined(x509.checkHost("localhost"))
      assert.isDefined(x509.checkIP("127.0.0.1"))
      const second = yield* certificates({ certPath: Option.none(), keyPath: Option.none(), dir })
      assert.strictEqual(second.pair.cert, first.pair.cert)
    }))

  it.live("uses TLS_CERT_PATH and TLS_KEY_PATH when set, and refuses a key that does not match", () =>
    Effect.gen(function*() {
      const made = yield* certificates({ certPath: Option.none(), keyPath: Option.none(), dir: tempDir() })
      const other = yield* certificates({ certPath: Option.none(), keyPath: Option.none(), dir: tempDir() })
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, "cert.pem"), made.pair.cert)
      fs.writeFileSync(path.join(dir, "key.pem"), made.pair.key)
      fs.writeFileSync(path.join(dir, "other-key.pem"), other.pair.key)
      const files = yield* certificates({
        certPath: Option.some(path.join(dir, "cert.pem")),
        keyPath: Option.some(path.join(dir, "key.pem")),
        dir: tempDir()
      })
      assert.strictEqual(files.source, "files")
      assert.strictEqual(files.pair.cert, made.pair.cert)
      const mismatch = yield* Effect.exit(certificates({
        certPath: Option.some(path.join(dir, "cert.pem")),
        keyPath: Option.some(path.join(dir, "other-key.pem")),
        dir: tempDir()
      }))
      assert.isTrue(Exit.isFailure(mismatch))
    }))

  it.live("speaks TLS 1.2 and 1.3 with forward-secret AEAD ciphers, and refuses TLS 1.1", () =>
    Effect.gen(function*() {
      const { pair } = yield* certificates({ certPath: Option.none(), keyPath: Option.none(), dir: tempDir() })
      const modern = yield* handshake(pair, {})
      assert.strictEqual(modern.protocol, "TLSv1.3")
      const tls12 = yield* handshake(pair, { maxVersion: "TLSv1.2" })
      assert.strictEqual(tls12.protocol, "TLSv1.2")
      assert.match(tls12.cipher, /^ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/)
      const cbc = yield* Effect.exit(handshake(pair, { maxVersion: "TLSv1.2", ciphers: "ECDHE-RSA-AES128-SHA" }))
      assert.isTrue(Exit.isFailure(cbc))
      const old = yield* Effect.exit(handshake(pair, { minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" }))
      assert.isTrue(Exit.isFailure(old))
    }))
})

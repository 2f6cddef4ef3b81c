import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { headerValue, matches, parse, print } from "../../src/capture/Transcript.ts"

const sample = `# smtp-gateway session capture
# proves: a client that pipelines
-- tls TLS_AES_256_GCM_SHA384
S: 220 * ESMTP ready
C: EHLO client.test
S: 250-* Nice to meet you, *
S: 250 SIZE 10000
C: AUTH PLAIN <redacted>
S: 235 2.7.0 Authentication successful
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
-- body 1234 bytes sha256:${"ab".repeat(32)}
C: .
C:
S: 250 2.0.0 Ok: queued as *
-- server closed
`

describe("Transcript", () => {
  it("prints what it parsed, line for line", () => {
    const parsed = parse(sample)
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isFailure(parsed)) return
    assert.strictEqual(print(parsed.success), sample)
    assert.strictEqual(headerValue(parsed.success, "proves"), "a client that pipelines")
    assert.deepStrictEqual(parsed.success.entries.map((e) => e.entry._tag), [
      "TlsStarted", "Server", "Client", "Server", "Server", "Client", "Server", "Client", "Server", "BodyDigest",
      "Client", "Client", "Server", "Closed"
    ])
    assert.deepStrictEqual(parsed.success.entries[9], { line: 12, entry: { _tag: "BodyDigest", size: 1234, sha256: "ab".repeat(32) } })
  })

  it("reads indented hand-written scripts and skips blank and comment lines", () => {
    const parsed = parse(`
      S: 220 *
      # a comment between entries
      C: QUIT
    `)
    assert.isTrue(Result.isSuccess(parsed))
    if (Result.isSuccess(parsed)) {
      assert.deepStrictEqual(parsed.success.entries.map((e) => [e.line, e.entry]), [
        [2, { _tag: "Server", text: "220 *" }],
        [4, { _tag: "Client", text: "QUIT" }]
      ])
    }
  })

  it("names the line that is not part of the format", () => {
    const parsed = parse("S: 220 *\nX: nonsense\n")
    assert.isTrue(Result.isFailure(parsed))
    if (Result.isFailure(parsed)) {
      assert.strictEqual(parsed.failure.line, 2)
      assert.include(parsed.failure.message, `line 2 is not a C:, S:, -- or # line: "X: nonsense"`)
    }
  })

  it("matches * against any run of characters and everything else literally", () => {
    assert.isTrue(matches("250 2.0.0 Ok: queued as *", "250 2.0.0 Ok: queued as 01ABC"))
    assert.isTrue(matches("250-* Nice to meet you, *", "250-gateway.test Nice to meet you, [127.0.0.1]"))
    assert.isFalse(matches("250 2.1.0 Sender ok", "550 5.7.1 Sender address not allowed for this account"))
    assert.isFalse(matches("250 (ok)", "250 ok"), "regular-expression characters are literal")
  })
})

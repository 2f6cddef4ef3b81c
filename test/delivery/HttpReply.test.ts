import { assert, describe, it } from "@effect/vitest"
import { errorReason, retryAfterMillis, shortReason } from "../../src/delivery/HttpReply.ts"

describe("HttpReply", () => {
  it("makes a reason one printable ASCII line, cut with \"...\" at the limit", () => {
    assert.strictEqual(shortReason("Bad\r\nrequest\u0000 here"), "Bad request here")
    assert.strictEqual(shortReason("café  au\tlait"), "caf au lait")
    const long = shortReason(`line one\r\nline two ${"x".repeat(400)}`)
    assert.strictEqual(long.length, 200)
    assert.isTrue(long.startsWith("line one line two xxx") && long.endsWith("..."))
  })

  it("reads detail (a string or FastAPI's list), then message, then error; else the fallback", () => {
    assert.strictEqual(errorReason(JSON.stringify({ detail: "invalid sender domain" }), "HTTP 400"), "invalid sender domain")
    const fastApi = { detail: [{ loc: ["body", "email"], msg: "value is not a valid email address" }, { msg: "second" }] }
    assert.strictEqual(errorReason(JSON.stringify(fastApi), "x"), "email: value is not a valid email address; second")
    assert.strictEqual(errorReason(JSON.stringify({ detail: " ", message: "slow down" }), "x"), "slow down")
    assert.strictEqual(errorReason(JSON.stringify({ error: "bad key" }), "x"), "bad key")
    assert.strictEqual(errorReason(JSON.stringify({ detail: 42 }), "HTTP 400"), "HTTP 400")
    assert.strictEqual(errorReason("<html>bad request</html>", "HTTP 400"), "HTTP 400")
  })

  it("reads Retry-After as seconds or as an HTTP date measured from now", () => {
    const now = Date.parse("2026-03-01T12:00:00Z")
    assert.strictEqual(retryAfterMillis(" 30 ", now), 30_000)
    assert.strictEqual(retryAfterMillis("Sun, 01 Mar 2026 12:02:00 GMT", now), 120_000)
    assert.strictEqual(retryAfterMillis("Sun, 01 Mar 2026 11:00:00 GMT", now), 0)
    assert.isUndefined(retryAfterMillis("soon", now))
    assert.isUndefined(retryAfterMillis(undefined, now))
  })
})

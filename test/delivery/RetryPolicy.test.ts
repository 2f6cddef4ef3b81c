import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import { backoffMillis, decide, maxRetryDelay, type RetrySettings } from "../../src/delivery/RetryPolicy.ts"
import { UpstreamError } from "../../src/delivery/Upstream.ts"

const settings: RetrySettings = { maxAttempts: 3, baseDelay: Duration.millis(250), maxDelay: maxRetryDelay }
const temporary = (retryAfterMillis?: number) =>
  new UpstreamError({ kind: "Temporary", detail: "HTTP 503", ...(retryAfterMillis === undefined ? {} : { retryAfterMillis }) })

describe("RetryPolicy", () => {
  it("doubles the delay for each retry, with up to half of it random", () => {
    assert.deepStrictEqual([1, 2, 3].map((n) => backoffMillis(settings, n, 0)), [125, 250, 500])
    assert.deepStrictEqual([1, 2, 3].map((n) => backoffMillis(settings, n, 0.999999)), [250, 500, 1000])
  })

  it("never waits longer than the cap between two attempts", () => {
    assert.strictEqual(backoffMillis(settings, 30, 0.999999), 5000)
    assert.strictEqual(backoffMillis(settings, 30, 0), 2500)
  })

  it("retries a temporary failure while attempts and time remain", () => {
    assert.deepStrictEqual(decide(settings, temporary(), 1, 10_000, 0), { _tag: "Retry", delayMillis: 125 })
    assert.deepStrictEqual(decide(settings, temporary(), 3, 10_000, 0), { _tag: "GiveUp" })
    assert.deepStrictEqual(decide(settings, temporary(), 1, 125, 0), { _tag: "GiveUp" })
  })

  it("honours Retry-After, even past the cap, only when it ends before the deadline", () => {
    assert.deepStrictEqual(decide(settings, temporary(8000), 1, 10_000, 0), { _tag: "Retry", delayMillis: 8000 })
    assert.deepStrictEqual(decide(settings, temporary(12_000), 1, 10_000, 0), { _tag: "GiveUp" })
  })

  it("never retries a permanent failure", () => {
    for (const kind of ["Rejected", "TooLarge", "Unauthorized"] as const) {
      assert.deepStrictEqual(decide(settings, new UpstreamError({ kind, detail: "no" }), 1, 10_000, 0), { _tag: "GiveUp" })
    }
  })
})

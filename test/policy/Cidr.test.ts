import { assert, describe, it } from "@effect/vitest"
import { makeCidrMatcher } from "../../src/policy/Cidr.ts"

describe("CIDR lists", () => {
  it("matches addresses, IPv4 and IPv6 subnets, and IPv4-mapped IPv6 peers", () => {
    const match = makeCidrMatcher(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert.isTrue(match("10.200.1.1"))
    assert.isTrue(match("::ffff:10.0.0.1"))
    assert.isTrue(match("192.0.2.7"))
    assert.isFalse(match("192.0.2.8"))
    assert.isTrue(match("2001:db8:1::5"))
    assert.isFalse(match("2001:db9::1"))
    assert.isFalse(match("not an address"))
  })
})

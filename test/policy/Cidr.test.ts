import { assert, describe, it } from "@effect/vitest"
import { clientKey, makeCidrMatcher } from "../../src/policy/Cidr.ts"

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

describe("the key a client is counted by", () => {
  it("is an IPv4 address itself", () => {
    assert.strictEqual(clientKey("192.0.2.1"), "192.0.2.1")
    assert.notStrictEqual(clientKey("192.0.2.1"), clientKey("192.0.2.2"))
  })

  it("is the /64 of an IPv6 address, however the address is spelled", () => {
    const key = "2001:db8:1:2::/64"
    for (const address of ["2001:db8:1:2::5", "2001:DB8:1:2:aaaa:bbbb:cccc:dddd", "2001:0db8:0001:0002::1", "2001:db8:1:2:0:0:0.0.0.9"]) {
      assert.strictEqual(clientKey(address), key, address)
    }
    assert.strictEqual(clientKey("2001:db8:1:3::1"), "2001:db8:1:3::/64")
    assert.strictEqual(clientKey("2001:db8:0:1::7"), "2001:db8:0:1::/64")
    assert.strictEqual(clientKey("fe80::1%eth0"), "fe80::/64")
    assert.strictEqual(clientKey("::1"), "::/64")
  })

  it("is the IPv4 address an IPv6 address carries: IPv4-mapped in any spelling, or NAT64's 64:ff9b::/96", () => {
    for (const address of ["::ffff:10.0.0.1", "::FFFF:a00:1", "::ffff:0a00:0001", "64:ff9b::a00:1", "64:ff9b::10.0.0.1"]) {
      assert.strictEqual(clientKey(address), "10.0.0.1", address)
    }
  })

  it("leaves what is not an address as it is, lower-cased", () => {
    assert.strictEqual(clientKey("Not-An-Address"), "not-an-address")
  })
})

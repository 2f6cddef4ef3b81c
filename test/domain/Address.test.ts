import { assert, describe, it } from "@effect/vitest"
import { Option } from "effect"
import { decodeMailbox, domainOf, senderAllowed } from "../../src/domain/Address.ts"

describe("Mailbox", () => {
  it.each([
    "alice@example.com",
    "first.last+tag@sub.example.co.uk",
    "o'brien@example.ie",
    "\"john doe\"@example.com",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "jöran@exämple.de",
    "用户@例子.广告"
  ])("accepts %s", (address) => {
    assert.isTrue(Option.isSome(decodeMailbox(address)))
  })

  it.each([
    "",
    "alice",
    "alice@",
    "@example.com",
    "alice@localhost",
    "alice@@example.com",
    "al ice@example.com",
    ".alice@example.com",
    "alice.@example.com",
    "al..ice@example.com",
    "alice@-example.com",
    "alice@example..com",
    "alice@exa_mple.com",
    "<alice@example.com>",
    "alice@example.com\r\nRCPT TO:<x@y.z>",
    `${"a".repeat(65)}@example.com`,
    `alice@${"a".repeat(250)}.com`
  ])("refuses %j", (address) => {
    assert.isTrue(Option.isNone(decodeMailbox(address)))
  })

  it("lower-cases the domain it reports", () => {
    const mailbox = Option.getOrThrow(decodeMailbox("Alice@Example.COM"))
    assert.strictEqual(domainOf(mailbox), "example.com")
  })
})

describe("senderAllowed", () => {
  const rules = ["alice@example.com", "@example.org"]

  it("allows an exact address, whatever its case", () => {
    assert.isTrue(senderAllowed(rules, "ALICE@example.com"))
  })

  it("allows any address of a listed domain", () => {
    assert.isTrue(senderAllowed(rules, "anyone@Example.org"))
  })

  it("refuses other addresses, subdomains and look-alikes", () => {
    assert.isFalse(senderAllowed(rules, "bob@example.com"))
    assert.isFalse(senderAllowed(rules, "anyone@mail.example.org"))
    assert.isFalse(senderAllowed(rules, "alice@example.com.evil.test"))
    assert.isFalse(senderAllowed(rules, "x@evilexample.org"))
  })

  it("refuses everything when there are no rules", () => {
    assert.isFalse(senderAllowed([], "alice@example.com"))
  })
})

/**
 * CIDR lists (ALLOWLIST_CIDRS, TRUSTED_PROXIES) as a membership test on client addresses, on Node's
 * `net.BlockList`. A bare address is a /32 (or /128); an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
 * as a dual-stack listener reports IPv4 peers) is tested as the IPv4 address. Pure; no IO.
 */
import * as net from "node:net"

/** `::ffff:10.0.0.1` → `10.0.0.1`; other addresses unchanged (lower-cased). */
export const normalizeAddress = (address: string): string => {
  const lower = address.trim().toLowerCase()
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(lower)
  return mapped === null ? lower : mapped[1]!
}

/** True when `address` is in one of `cidrs`; entries that are not CIDRs or addresses are ignored. */
export type CidrMatcher = (address: string) => boolean

export const makeCidrMatcher = (cidrs: ReadonlyArray<string>): CidrMatcher => {
  if (cidrs.length === 0) return () => false
  const list = new net.BlockList()
  for (const entry of cidrs) {
    const [rawAddress = "", rawPrefix] = entry.split("/")
    const address = normalizeAddress(rawAddress)
    const family = net.isIP(address)
    if (family === 0) continue
    const type = family === 4 ? "ipv4" : "ipv6"
    const max = family === 4 ? 32 : 128
    const prefix = rawPrefix === undefined ? max : Number(rawPrefix)
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) continue
    list.addSubnet(address, prefix, type)
  }
  return (raw) => {
    const address = normalizeAddress(raw)
    const family = net.isIP(address)
    return family !== 0 && list.check(address, family === 4 ? "ipv4" : "ipv6")
  }
}

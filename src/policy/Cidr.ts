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

/** One CIDR (or bare address) of a list, or `undefined` when it is neither: the one rule Config checks with. */
export const parseCidr = (entry: string): { readonly address: string; readonly prefix: number; readonly type: "ipv4" | "ipv6" } | undefined => {
  const [rawAddress = "", rawPrefix, ...rest] = entry.split("/")
  const address = normalizeAddress(rawAddress)
  const family = net.isIP(address)
  if (family === 0 || rest.length > 0) return undefined
  const max = family === 4 ? 32 : 128
  const prefix = rawPrefix === undefined ? max : /^\d{1,3}$/.test(rawPrefix) ? Number(rawPrefix) : Number.NaN
  return prefix >= 0 && prefix <= max ? { address, prefix, type: family === 4 ? "ipv4" : "ipv6" } : undefined
}

/** True when `address` is in one of `cidrs` (each accepted by `parseCidr`: Config refuses the others at startup). */
export type CidrMatcher = (address: string) => boolean

export const makeCidrMatcher = (cidrs: ReadonlyArray<string>): CidrMatcher => {
  if (cidrs.length === 0) return () => false
  const list = new net.BlockList()
  for (const entry of cidrs) {
    const cidr = parseCidr(entry)
    if (cidr !== undefined) list.addSubnet(cidr.address, cidr.prefix, cidr.type)
  }
  return (raw) => {
    const address = normalizeAddress(raw)
    const family = net.isIP(address)
    return family !== 0 && list.check(address, family === 4 ? "ipv4" : "ipv6")
  }
}

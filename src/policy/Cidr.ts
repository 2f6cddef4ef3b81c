/**
 * Client addresses: CIDR lists (ALLOWLIST_CIDRS, TRUSTED_PROXIES) as a membership test, on Node's
 * `net.BlockList`, and the key a client is counted by in the per-IP limits. A bare address is a /32
 * (or /128); an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack listener reports IPv4
 * peers) is tested as the IPv4 address. Pure; no IO.
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

/** The eight 16-bit groups of a valid IPv6 address without a zone (any spelling: `::`, a dotted IPv4 tail). */
const ipv6Groups = (address: string): Array<number> => {
  let text = address
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head = "", tail] = text.split("::")
  const groupsOf = (part: string) => (part === "" ? [] : part.split(":"))
  const left = groupsOf(head)
  const right = tail === undefined ? [] : groupsOf(tail)
  const zeros = new Array<string>(8 - left.length - right.length).fill("0")
  return [...left, ...zeros, ...right].map((group) => parseInt(group, 16))
}

const ipv4Of = (high: number, low: number) => [high >> 8, high & 0xff, low >> 8, low & 0xff].join(".")

/**
 * The key a client is counted by in the per-IP limits (connections, message rate, AUTH failures).
 * An IPv4 address is itself. An IPv6 address counts by its /64, written `2001:db8:0:1::/64`: a
 * subscriber (a home, an office, a phone, a server) is given at least a /64 and may use any address in
 * it, so counting single addresses would give each client 2^64 budgets. Hosts that share a /64 share
 * a budget, as hosts behind one IPv4 NAT do. An IPv6 address that carries an IPv4 one (IPv4-mapped in
 * any spelling, or NAT64's well-known prefix 64:ff9b::/96) is that IPv4 client. Anything that is not
 * an address is returned normalised, as it was counted before.
 */
export const clientKey = (raw: string): string => {
  const address = normalizeAddress(raw)
  const unzoned = address.replace(/%.*$/, "")
  if (!net.isIPv6(unzoned)) return address
  const g = ipv6Groups(unzoned)
  const zero = (from: number, to: number) => g.slice(from, to).every((group) => group === 0)
  // IPv4-mapped (::ffff:0:0/96) or NAT64's well-known prefix (64:ff9b::/96): the IPv4 client inside
  if ((zero(0, 5) && g[5] === 0xffff) || (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6))) return ipv4Of(g[6]!, g[7]!)
  const network = g.slice(0, 4)
  while (network.length > 0 && network[network.length - 1] === 0) network.pop()
  return `${network.map((group) => group.toString(16)).join(":")}::/64` // RFC 5952's form
}

/**
 * PROXY protocol v1 (text) and v2 (binary) headers, as a load balancer sends them before the first
 * SMTP byte: a pure parser, and a reader that takes the header off a socket. The listener uses it
 * only for peers in TRUSTED_PROXIES (CIDRs), so the real client address reaches limits and logs.
 * It decides nothing about trust itself.
 */
import * as net from "node:net"

/** The client the proxy speaks for; absent for v2 LOCAL and v1 UNKNOWN (health checks). */
export interface ProxiedClient {
  readonly address: string
  readonly port: number
}

export type ProxyParse =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Invalid"; readonly reason: string }
  | { readonly _tag: "Parsed"; readonly consumed: number; readonly client: ProxiedClient | undefined }

const v2Signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const v1Prefix = Buffer.from("PROXY ", "latin1")
/** v1 headers are at most 107 bytes with CRLF. */
const v1MaxLength = 107
/** v2: 16 fixed bytes plus addresses and TLVs; more than this is refused. */
const maxHeaderLength = 4096

const isPrefixOf = (chunk: Buffer, whole: Buffer) =>
  whole.subarray(0, Math.min(chunk.length, whole.length)).equals(chunk.subarray(0, Math.min(chunk.length, whole.length)))

const port = (text: string) => (/^\d{1,5}$/.test(text) && Number(text) <= 65535 ? Number(text) : undefined)

const isIp = (address: string, family: 4 | 6) => (family === 4 ? net.isIPv4(address) : net.isIPv6(address))

const parseV1 = (buffer: Buffer): ProxyParse => {
  const end = buffer.indexOf("\r\n", 0, "latin1")
  if (end < 0) {
    return buffer.length >= v1MaxLength ? { _tag: "Invalid", reason: "PROXY v1 header too long" } : { _tag: "Incomplete" }
  }
  if (end + 2 > v1MaxLength) return { _tag: "Invalid", reason: "PROXY v1 header too long" }
  const parts = buffer.subarray(0, end).toString("latin1").split(" ")
  const consumed = end + 2
  if (parts[1] === "UNKNOWN") return { _tag: "Parsed", consumed, client: undefined }
  if (parts.length !== 6 || (parts[1] !== "TCP4" && parts[1] !== "TCP6")) {
    return { _tag: "Invalid", reason: "malformed PROXY v1 header" }
  }
  const family = parts[1] === "TCP4" ? 4 : 6
  const [, , source = "", destination = "", sourcePort = "", destinationPort = ""] = parts
  const sport = port(sourcePort)
  if (!isIp(source, family) || !isIp(destination, family) || sport === undefined || port(destinationPort) === undefined) {
    return { _tag: "Invalid", reason: "malformed PROXY v1 addresses" }
  }
  return { _tag: "Parsed", consumed, client: { address: source.toLowerCase(), port: sport } }
}

const ipv6Text = (bytes: Buffer) => {
  const groups: Array<string> = []
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16))
  return groups.join(":")
}

const parseV2 = (buffer: Buffer): ProxyParse => {
  if (buffer.length < 16) return { _tag: "Incomplete" }
  const versionCommand = buffer[12]!
  const familyProtocol = buffer[13]!
  const length = buffer.readUInt16BE(14)
  if (versionCommand >> 4 !== 2) return { _tag: "Invalid", reason: "unsupported PROXY v2 version" }
  if (16 + length > maxHeaderLength) return { _tag: "Invalid", reason: "PROXY v2 header too long" }
  if (buffer.length < 16 + length) return { _tag: "Incomplete" }
  const consumed = 16 + length
  const command = versionCommand & 0x0f
  if (command === 0x0) return { _tag: "Parsed", consumed, client: undefined } // LOCAL: the proxy's own connection
  if (command !== 0x1) return { _tag: "Invalid", reason: "unsupported PROXY v2 command" }
  const body = buffer.subarray(16, consumed)
  switch (familyProtocol) {
    case 0x11: // TCP over IPv4
      if (body.length < 12) return { _tag: "Invalid", reason: "short PROXY v2 IPv4 address block" }
      return {
        _tag: "Parsed",
        consumed,
        client: { address: Array.from(body.subarray(0, 4)).join("."), port: body.readUInt16BE(8) }
      }
    case 0x21: // TCP over IPv6
      if (body.length < 36) return { _tag: "Invalid", reason: "short PROXY v2 IPv6 address block" }
      return { _tag: "Parsed", consumed, client: { address: ipv6Text(body.subarray(0, 16)), port: body.readUInt16BE(32) } }
    case 0x00: // UNSPEC: keep the socket's address
      return { _tag: "Parsed", consumed, client: undefined }
    default:
      return { _tag: "Invalid", reason: "unsupported PROXY v2 address family or protocol" }
  }
}

/** Parses the PROXY header at the start of `buffer` (v1 or v2). */
const parseProxyHeader = (buffer: Buffer): ProxyParse => {
  if (buffer.length === 0) return { _tag: "Incomplete" }
  if (isPrefixOf(buffer, v2Signature)) return buffer.length < v2Signature.length ? { _tag: "Incomplete" } : parseV2(buffer)
  if (isPrefixOf(buffer, v1Prefix)) return buffer.length < v1Prefix.length ? { _tag: "Incomplete" } : parseV1(buffer)
  return { _tag: "Invalid", reason: "no PROXY header from a trusted proxy" }
}

/**
 * Reads the PROXY header off `socket` and hands back the client it names (or `undefined` to keep the
 * socket's own address). Bytes after the header are put back for SMTP. On a malformed header, or a
 * socket that closes first, the socket is destroyed and `done` gets the error.
 */
export const readProxyHeader = (
  socket: net.Socket,
  done: (error: Error | null, client?: ProxiedClient) => void
): void => {
  let buffered = Buffer.alloc(0)
  let finished = false
  const finish = (error: Error | null, client?: ProxiedClient) => {
    if (finished) return
    finished = true
    socket.off("readable", onReadable)
    socket.off("error", onError)
    socket.off("close", onClose)
    socket.off("end", onClose)
    if (error !== null) {
      socket.on("error", () => undefined) // late errors of a socket being torn down
      socket.destroy()
    }
    done(error, client)
  }
  const onReadable = () => {
    let chunk: Buffer | null
    while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
      buffered = Buffer.concat([buffered, chunk])
      const parsed = parseProxyHeader(buffered)
      if (parsed._tag === "Incomplete") {
        if (buffered.length > maxHeaderLength) finish(new Error("PROXY header too long"))
        continue
      }
      if (parsed._tag === "Invalid") return finish(new Error(parsed.reason))
      const rest = buffered.subarray(parsed.consumed)
      if (rest.length > 0) socket.unshift(rest)
      return finish(null, parsed.client)
    }
  }
  const onError = (error: Error) => finish(error)
  const onClose = () => finish(new Error("the connection closed before the PROXY header"))
  socket.on("readable", onReadable)
  socket.on("error", onError)
  socket.on("close", onClose)
  socket.on("end", onClose)
}

/**
 * The benchmark's ceiling: a do-nothing SMTP responder on raw sockets. It answers every command with
 * success (STARTTLS and AUTH included, any credentials), reads DATA to the final dot and drops it. It
 * shows what the load generator and the machine can do with no server work at all. Never a real server.
 * Env: RESPONDER_PORT, TLS_CERT_PATH, TLS_KEY_PATH.
 */
import { readFileSync } from "node:fs"
import * as net from "node:net"
import * as tls from "node:tls"

const context = tls.createSecureContext({
  key: readFileSync(process.env.TLS_KEY_PATH ?? ""),
  cert: readFileSync(process.env.TLS_CERT_PATH ?? "")
})
const ehlo = "250-bench.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 26214400\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
const end = Buffer.from("\r\n.\r\n")

const serve = (socket: net.Socket): void => {
  let inData = false
  let text = ""
  let tail: Buffer = Buffer.alloc(0)
  const onData = (chunk: Buffer): void => {
    if (inData) {
      const joined = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk
      const at = joined.indexOf(end)
      if (at < 0) {
        tail = joined.subarray(Math.max(0, joined.length - 4))
        return
      }
      inData = false
      tail = Buffer.alloc(0)
      socket.write("250 2.0.0 Ok: dropped\r\n")
      chunk = joined.subarray(at + end.length)
      if (chunk.length === 0) return
    }
    text += chunk.toString("latin1")
    let out = ""
    let i: number
    while (!inData && (i = text.indexOf("\r\n")) >= 0) {
      const line = text.slice(0, i)
      text = text.slice(i + 2)
      const verb = line.slice(0, 4).toUpperCase()
      if (verb === "EHLO") out += ehlo
      else if (verb === "DATA") {
        out += "354 End data with <CR><LF>.<CR><LF>\r\n"
        inData = true
        const rest = Buffer.from(text, "latin1")
        text = ""
        if (rest.length > 0) {
          socket.write(out)
          out = ""
          onData(rest)
          return
        }
      } else if (verb === "STAR") {
        socket.write("220 2.0.0 Ready to start TLS\r\n")
        socket.removeListener("data", onData)
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context })
        secure.on("error", () => secure.destroy())
        serve(secure)
        return
      } else if (verb === "AUTH") out += "235 2.7.0 Authentication successful\r\n"
      else if (verb === "QUIT") {
        socket.end("221 2.0.0 Bye\r\n")
        return
      } else out += "250 2.0.0 Ok\r\n"
    }
    if (out !== "") socket.write(out)
  }
  socket.on("data", onData)
  socket.on("error", () => socket.destroy())
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true)
  socket.write("220 bench.localhost ESMTP do-nothing responder\r\n")
  serve(socket)
})
server.listen(Number(process.env.RESPONDER_PORT), "127.0.0.1")
process.on("SIGTERM", () => process.exit(0))

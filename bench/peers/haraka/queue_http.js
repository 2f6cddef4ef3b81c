// Benchmark peer plugin for Haraka (our own code; Haraka itself is installed outside the repo): accepts
// every recipient (plain mode has no AUTH to grant relaying), parses the body, and posts the message as
// JSON to the HTTP upstream stand-in over keep-alive; OK (250) only after a 2xx, DENYSOFT otherwise.
const http = require('node:http')
const { URL } = require('node:url')

exports.register = function () {
  this.url = new URL(this.config.get('queue_http.ini', 'ini').main.url)
  this.agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
}

// Haraka leaves Nagle on, so a reply to a pipelined command waits for the client's delayed ACK (40 ms on
// Linux): what any operator tuning it would switch off, done here so that the column measures Haraka at its best
exports.hook_connect_init = function (next, connection) {
  const socket = connection.client.targetsocket ?? connection.client
  socket.setNoDelay?.(true)
  next()
}

exports.hook_rcpt = function (next) {
  next(OK)
}

exports.hook_data = function (next, connection) {
  connection.transaction.parse_body = true
  const attachments = []
  connection.transaction.notes.attachments = attachments
  connection.transaction.attachment_hooks((ct, filename, body, stream) => {
    const chunks = []
    stream.on('data', (c) => chunks.push(c))
    stream.on('end', () => attachments.push({ filename, content_type: ct, content_base64: Buffer.concat(chunks).toString('base64') }))
  })
  next()
}

const textOf = (body) => {
  if (!body) return null
  if (/^text\/plain/i.test(body.ct ?? '')) return body.bodytext
  for (const child of body.children ?? []) {
    const t = textOf(child)
    if (t !== null) return t
  }
  return null
}

const addressOf = (a) => (typeof a.address === 'function' ? a.address() : String(a.address))

// relayed (authenticated) mail goes through queue_outbound, the rest through queue: both post
exports.hook_queue_outbound = function (next, connection) {
  exports.hook_queue.call(this, next, connection)
}

exports.hook_queue = function (next, connection) {
  const txn = connection.transaction
  const payload = JSON.stringify({
    envelope: { mail_from: addressOf(txn.mail_from), rcpt_to: txn.rcpt_to.map(addressOf) },
    message_id: txn.header.get('Message-ID').trim(),
    subject: txn.header.get('Subject').trim(),
    headers: txn.header.lines(),
    text: textOf(txn.body),
    attachments: txn.notes.attachments ?? [],
  })
  const req = http.request(
    {
      host: this.url.hostname,
      port: this.url.port,
      path: this.url.pathname,
      method: 'POST',
      agent: this.agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), authorization: 'Bearer bench' },
    },
    (res) => {
      res.resume()
      res.on('end', () => (res.statusCode >= 200 && res.statusCode < 300 ? next(OK, 'Ok: queued') : next(DENYSOFT, 'upstream failed')))
    },
  )
  req.on('error', () => next(DENYSOFT, 'upstream unreachable'))
  req.end(payload)
}

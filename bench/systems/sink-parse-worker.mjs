/**
 * The parse worker of the sink with SINK_EXTRAS=worker: mailparser's simpleParser over bytes sent from
 * the main thread, the parts it needs posted back (structured-cloned, as the messages' own bytes were sent).
 * Plain JavaScript: a worker thread does not get the tsx loader the sink runs under.
 */
import { parentPort } from "node:worker_threads"
import { simpleParser } from "mailparser"

parentPort.on("message", ({ id, bytes }) => {
  simpleParser(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {}).then(
    (mail) => {
      const attachments = mail.attachments.map((a) => ({
        filename: a.filename ?? null,
        contentType: a.contentType,
        size: a.size,
        content: new Uint8Array(a.content.buffer, a.content.byteOffset, a.content.byteLength)
      }))
      parentPort.postMessage({
        id,
        mail: {
          messageId: mail.messageId ?? null,
          from: mail.from?.value ?? [],
          to: Array.isArray(mail.to) ? mail.to.flatMap((t) => t.value) : mail.to?.value ?? [],
          subject: mail.subject ?? null,
          text: mail.text ?? null,
          html: mail.html === false ? null : mail.html ?? null,
          headerLines: mail.headerLines,
          attachments
        }
      })
    },
    (error) => parentPort.postMessage({ id, error: String(error) })
  )
})

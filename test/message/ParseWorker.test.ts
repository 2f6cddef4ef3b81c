import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { ReceivedBase64 } from "../../src/domain/Message.ts"
import { type BodyRange, defaultMimeLimits, scanMime } from "../../src/message/MimeLimits.ts"
import { contentCollector, type MailParts, parseMail, type PlainBase64, plainBase64 } from "../../src/message/ParseWorker.ts"
import { contentBytes } from "../support/Attachments.ts"
import { withAttachment as messageWithAttachment } from "./fixtures.ts"

/** A message with one base64 attachment of `content`, as the worker gets it. */
const withAttachment = (content: Buffer): Uint8Array => new TextEncoder().encode(messageWithAttachment(content))

const patterned = (size: number): Buffer => Buffer.from(Array.from({ length: size }, (_, i) => (i * 31 + 7) & 0xff))

const bytesOf = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "latin1"))

/** Where MimeLimits' pass finds base64 attachment bodies. */
const bodiesOf = (raw: Uint8Array): ReadonlyArray<BodyRange> => {
  const scan = scanMime(raw, defaultMimeLimits)
  if (scan.violation !== undefined) throw new Error(scan.violation.reason)
  return scan.base64Bodies
}

/** The message as the worker reads it (plain base64 left as text), and as mailparser alone reads it. */
const bothWays = async (raw: Uint8Array): Promise<{ readonly own: MailParts; readonly mailparser: MailParts }> => ({
  own: await parseMail(raw, bodiesOf(raw)),
  mailparser: await parseMail(raw)
})

/** The parts with every attachment left as base64 text decoded, as the email API will decode it. */
const decoded = (parts: MailParts, raw: Uint8Array): MailParts => ({
  ...parts,
  attachments: parts.attachments.map(({ content, ...rest }) => ({
    ...rest,
    content: content instanceof Uint8Array
      ? content
      : contentBytes(new ReceivedBase64(raw, content.start, content.end, content.size))
  }))
})

/** True when the worker handed the attachment over as where its base64 text lies, not as bytes. */
const leftAsText = (content: Uint8Array | PlainBase64): boolean => !(content instanceof Uint8Array)

const lines = (base64: string, width: number): string => (base64.match(new RegExp(`.{1,${width}}`, "g")) ?? []).join("\r\n")

const part = (headers: string, body: string): string => `${headers}\r\n\r\n${body}\r\n`

/**
 * Random multipart messages from a seed: nested multiparts (some left open, some boundaries with trailing
 * blanks), forwarded messages, and leaf parts of many types, encodings and base64 shapes, plain or not.
 */
const randomMessages = (seed: number, count: number): Array<string> => {
  let state = seed
  const random = () => (state = (state * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
  const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)]!
  const base64Body = (size: number): string => {
    const base64 = Buffer.from(Array.from({ length: size }, () => Math.floor(random() * 256))).toString("base64")
    const shape = pick(["76", "76", "75", "one line", "a space", "padded inside", "unpadded", "not base64", "trailing blanks"])
    if (shape === "unpadded") return lines(base64.replace(/=+$/, ""), 76)
    if (shape === "one line") return base64.slice(0, 60_000)
    const body = lines(base64, shape === "75" ? 75 : 76)
    if (shape === "a space") return body.slice(0, 10) + " " + body.slice(10)
    if (shape === "padded inside") return "QQ==\r\n" + body
    if (shape === "not base64") return body + "\r\n!!"
    if (shape === "trailing blanks") return body.replace(/\r\n/g, " \r\n")
    return body
  }
  let boundaries = 0
  const entity = (depth: number): string => {
    if (depth === 1 || (depth < 3 && random() < 0.3)) {
      const boundary = `b${boundaries++}${pick(["", "==", " x"])}`
      let text = `Content-Type: multipart/${pick(["mixed", "alternative", "related"])}; boundary="${boundary}"\r\n\r\n`
      const parts = 1 + Math.floor(random() * 4)
      for (let i = 0; i < parts; i++) text += `--${boundary}${random() < 0.1 ? "  " : ""}\r\n${entity(depth + 1)}\r\n`
      return random() < 0.9 ? `${text}--${boundary}--` : text.slice(0, -2)
    }
    if (depth < 3 && random() < 0.1) return `Content-Type: message/rfc822\r\n\r\nSubject: forwarded\r\n${entity(depth + 1)}`
    const type = pick(["application/pdf", "image/png", "text/csv", "text/plain", "text/html", "audio/x-wav", "APPLICATION/PDF", "x", ""])
    const encoding = pick(["base64", "base64", "Base64", " base64 ", "quoted-printable", "7bit", ""])
    const headers = (type === "" ? "" : `Content-Type: ${type}\r\n`) + (encoding === "" ? "" : `Content-Transfer-Encoding: ${encoding}\r\n`) +
      (random() < 0.3 ? `Content-Disposition: ${pick(["attachment", "inline", "attachment; filename=x.bin"])}\r\n` : "")
    const body = /base64/i.test(encoding) ? base64Body(Math.floor(random() * (random() < 0.2 ? 100_000 : 3000))) : "text\r\n=41"
    return `${headers}\r\n${body}`
  }
  return Array.from({ length: count }, () => `From: a@example.test\r\nSubject: random\r\n${entity(1)}\r\n`)
}

/** A forwarded message, with an attachment of its own. */
const inner = (): string =>
  "From: c@example.test\r\nSubject: forwarded\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n" +
  "--in\r\n" + part("Content-Type: text/plain", "inner text") +
  "--in\r\n" + part("Content-Type: image/gif; name=in.gif\r\nContent-Transfer-Encoding: base64", lines(patterned(900).toString("base64"), 76)) +
  "--in--"

/** A message with every kind of part the worker's own decoding must read exactly as mailparser does. */
const mixedBag = (): string => {
  const pdf = patterned(100_000)
  const png = patterned(3_000).reverse()
  const csv = Buffer.from("a,b\r\n1,2\r\n".repeat(500))
  const zip = Buffer.from(patterned(45_000).map((b) => b ^ 0x5a))
  return "From: a@example.test\r\nTo: b@example.test\r\nSubject: a mixed bag\r\nMIME-Version: 1.0\r\n" +
    "Content-Type: multipart/mixed; boundary=\"outer b\"\r\n\r\npreamble\r\n" +
    "--outer b\r\nContent-Type: multipart/related; boundary=rel\r\n\r\n" +
    "--rel\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n" +
    "--alt\r\n" + part("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64", lines(Buffer.from("héllo").toString("base64"), 76)) +
    "--alt\r\n" + part("Content-Type: text/html", "<p>hello <img src=\"cid:logo\"></p>") +
    "--alt--\r\n" +
    "--rel\r\n" + part("Content-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64", lines(png.toString("base64"), 76)) +
    "--rel--\r\n" +
    "--outer b\r\n" + part("Content-Type: application/pdf; name=report.pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\nContent-Transfer-Encoding: BASE64", lines(pdf.toString("base64"), 75)) +
    "--outer b\r\n" + part("Content-Type: text/csv; name=data.csv\r\nContent-Transfer-Encoding: base64", lines(csv.toString("base64"), 76)) +
    "--outer b\r\n" + part("Content-Type: application/zip; name=one-line.zip\r\nContent-Transfer-Encoding: base64", zip.toString("base64")) +
    "--outer b\r\n" + part("Content-Type: application/octet-stream; name=qp.bin\r\nContent-Transfer-Encoding: quoted-printable", "a=3Db=\r\nc") +
    "--outer b\r\n" + part("Content-Type: application/octet-stream; name=spaced.bin\r\nContent-Transfer-Encoding: base64", "QUJD REVG\r\nR0hJ") +
    "--outer b\r\n" + part("Content-Type: application/octet-stream; name=padded-twice.bin\r\nContent-Transfer-Encoding: base64", "QQ==QQ==") +
    "--outer b\r\n" + part("Content-Type: application/octet-stream; name=empty.bin\r\nContent-Transfer-Encoding: base64", "") +
    "--outer b\r\n" + part("Content-Type: message/rfc822", inner()) +
    "--outer b\r\n" + part("Content-Type: application/pdf; name=after.pdf\r\nContent-Transfer-Encoding: base64", lines(patterned(500).toString("base64"), 76)) +
    "--outer b--\r\nepilogue\r\n"
}

describe("ParseWorker", () => {
  describe("collects what mailparser decodes", () => {
    it("writes a large attachment in place, in a buffer of exactly its bytes reserved within the message's size", async () => {
      const content = patterned(1024 * 1024)
      const raw = withAttachment(content)
      const { attachments } = await parseMail(raw)
      const bytes = attachments[0]!.content as Uint8Array
      assert.isTrue(Buffer.from(bytes).equals(content))
      assert.strictEqual(bytes.byteOffset, 0)
      assert.strictEqual(bytes.buffer.byteLength, content.length) // transferred whole, never copied
      const buffer = bytes.buffer as ArrayBuffer
      assert.isTrue(buffer.resizable)
      assert.isAtMost(buffer.maxByteLength, raw.length)
    })

    it("copies a small attachment into a buffer of its own, which reserves nothing more", async () => {
      const content = patterned(1000)
      const { attachments } = await parseMail(withAttachment(content))
      const bytes = attachments[0]!.content as Uint8Array
      assert.isTrue(Buffer.from(bytes).equals(content))
      assert.isFalse((bytes.buffer as ArrayBuffer).resizable)
      assert.strictEqual(bytes.buffer.byteLength, 1000)
    })

    it("keeps every byte that arrives past the collector's bound", () => {
      const collector = contentCollector(4)
      const chunks = [patterned(5), patterned(3), patterned(70_000)]
      for (const chunk of chunks) collector.add(chunk)
      const bytes = collector.done()
      assert.isTrue(Buffer.from(bytes).equals(Buffer.concat(chunks)))
      assert.strictEqual(bytes.buffer.byteLength, bytes.byteLength)
    })
  })

  describe("leaves plain base64 attachment bodies as the text they arrived as", () => {
    it("reads a message with every kind of part as mailparser does, the bytes of that text included", async () => {
      const raw = bytesOf(mixedBag())
      const { mailparser, own } = await bothWays(raw)
      assert.deepStrictEqual(decoded(own, raw), mailparser)
      assert.deepStrictEqual(
        own.attachments.map((a) => [a.filename, a.size]),
        [
          [null, 3000],
          ["report.pdf", 100_000],
          ["data.csv", 5000],
          ["one-line.zip", 45_000],
          ["qp.bin", 4],
          ["spaced.bin", 9],
          ["padded-twice.bin", 2],
          ["empty.bin", 0],
          [null, inner().length], // message/rfc822: one attachment, the gif inside it included
          ["after.pdf", 500]
        ]
      )
      assert.strictEqual(Buffer.from(decoded(own, raw).attachments[8]!.content as Uint8Array).toString("latin1"), inner())
      // the png, pdf, csv, zip, empty and after.pdf stay text: the message was not read again by mailparser alone
      assert.deepStrictEqual(
        own.attachments.map((a) => leftAsText(a.content)),
        [true, true, true, true, false, false, false, true, false, true]
      )
    })

    it("notes the base64 bodies of attachments, from the first base64 character to the line break before the boundary", () => {
      const raw = bytesOf(mixedBag())
      const text = Buffer.from(raw).toString("latin1")
      const noted = bodiesOf(raw).map(({ end, start }) => text.slice(start, end))
      // the png, pdf, csv, zip, spaced, padded-twice, empty and the pdf after the forwarded message; never
      // text/plain or text/html, nor the gif inside the forwarded message (mailparser keeps it in that message)
      assert.strictEqual(noted.length, 8)
      assert.strictEqual(noted[7]!.replace(/\r\n/g, ""), patterned(500).toString("base64"))
      assert.strictEqual(noted[1]!.replace(/\r\n/g, ""), patterned(100_000).toString("base64"))
      assert.strictEqual(noted[5], "QQ==QQ==")
      assert.strictEqual(noted[6], "")
      for (const body of noted) assert.notInclude(body, "--")
    })

    it("hands a large attachment over as where its text lies in the message, with the size it decodes to", async () => {
      const content = patterned(1024 * 1024)
      const raw = withAttachment(content)
      const [body] = bodiesOf(raw)
      const { attachments } = await parseMail(raw, [body!])
      assert.deepStrictEqual(attachments[0]!.content, { start: body!.start, end: body!.end, size: content.length })
      assert.strictEqual(attachments[0]!.size, content.length)
      assert.strictEqual(Buffer.from(raw).toString("latin1", body!.start, body!.end).replace(/\r\n/g, ""), content.toString("base64"))
    })

    it("leaves to mailparser a body that is not plain base64", () => {
      const body = (text: string) => {
        const raw = bytesOf(text)
        return plainBase64(raw, { start: 0, end: raw.length })
      }
      assert.deepStrictEqual(body("QUJD\r\nREVG\r\nRw==")?.size, 7)
      assert.deepStrictEqual(body("QUJDRA==")?.size, 4)
      assert.isUndefined(body("QUJD REVG")) // a space
      assert.isUndefined(body("QQ==QQ==")) // padding before the end
      assert.isUndefined(body("QUJDR")) // not whole groups of four
      assert.isUndefined(body("QUJD\r\n--b")) // a boundary
      assert.isUndefined(body("QUJD\nREVG")) // a line break other than CRLF
      assert.isUndefined(body("QR==")) // bits set past the last byte: its text is not the base64 of its bytes
      assert.isUndefined(body("QUJ=")) // the same with one `=`
      assert.strictEqual(body("QUI=")?.size, 2)
    })

    it("reads the message again with mailparser alone when mailparser does not give back what stood in for a body", async () => {
      const content = patterned(200_000)
      const raw = withAttachment(content)
      const [body] = bodiesOf(raw)
      // half a body: mailparser reads the stand-in followed by the other half, which is no stand-in
      const half = { start: body!.start, end: body!.start + Math.floor((body!.end - body!.start) / 2 / 78) * 78 - 2 }
      const parts = await parseMail(raw, [half])
      assert.deepStrictEqual(parts, await parseMail(raw))
      assert.isFalse(leftAsText(parts.attachments[0]!.content))
      assert.isTrue(Buffer.from(parts.attachments[0]!.content as Uint8Array).equals(content))
    })

    it("reads random MIME messages, well formed or not, exactly as mailparser does", async () => {
      let withBodies = 0
      for (const text of randomMessages(8, 300)) {
        const raw = bytesOf(text)
        const scan = scanMime(raw, defaultMimeLimits)
        if (scan.violation !== undefined) continue
        if (scan.base64Bodies.some((body) => plainBase64(raw, body) !== undefined)) withBodies++
        assert.deepStrictEqual(decoded(await parseMail(raw, scan.base64Bodies), raw), await parseMail(raw), text.slice(0, 200))
      }
      assert.isAbove(withBodies, 100)
    })

    it("reads the attachments fixture exactly as mailparser does", async () => {
      const raw = new Uint8Array(
        Buffer.from(readFileSync(new URL("../fixtures/messages/attachments.eml", import.meta.url), "latin1").replace(/\r?\n/g, "\r\n"), "latin1")
      )
      const { mailparser, own } = await bothWays(raw)
      assert.isAbove(own.attachments.length, 0)
      assert.isTrue(own.attachments.every((a) => leftAsText(a.content)))
      assert.deepStrictEqual(decoded(own, raw), mailparser)
    })
  })
})

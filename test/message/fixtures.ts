/** Messages built for the parser's tests. */

/** A multipart message: a short text part, then `content` as a base64 attachment in 76-character lines. */
export const withAttachment = (content: Buffer): string =>
  "From: a@example.test\r\nSubject: attached\r\nMIME-Version: 1.0\r\n" +
  "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
  "--b\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
  `${(content.toString("base64").match(/.{1,76}/g) ?? []).join("\r\n")}\r\n--b--\r\n`

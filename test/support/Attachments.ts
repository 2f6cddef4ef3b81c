/** An attachment's content as bytes, for assertions. */
import { type AttachmentContent, ReceivedBase64 } from "../../src/domain/Message.ts"

/** The bytes of an attachment's content, decoded when it is still the base64 text it arrived as. */
export const contentBytes = (content: AttachmentContent): Uint8Array =>
  content instanceof ReceivedBase64 ? new Uint8Array(Buffer.from(content.text(), "base64")) : content

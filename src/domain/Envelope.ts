/**
 * One SMTP session as the policy and the pipeline see it (who is connected, over what), and the
 * envelope of one transaction (MAIL FROM, RCPT TO and their parameters). Pure data.
 */
import { Data, Option } from "effect"
import type { Mailbox } from "./Address.ts"

export interface TlsInfo {
  readonly protocol: string
  readonly cipher: string
}

export class SessionInfo extends Data.Class<{
  /** smtp-server's session id; also the `session_id` of every log line. */
  readonly id: string
  readonly remoteAddress: string
  readonly remotePort: number
  /** The name the client gave in EHLO/HELO, empty before it did. */
  readonly helo: string
  readonly tls: Option.Option<TlsInfo>
}> {}

export type BodyType = "7BIT" | "8BITMIME"

export class Envelope extends Data.Class<{
  readonly mailFrom: Mailbox
  readonly rcptTo: ReadonlyArray<Mailbox>
  readonly bodyType: BodyType
}> {}

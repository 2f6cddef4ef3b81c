/**
 * Who is submitting: the credentials a client presented (secret kept Redacted) and the principal an
 * auth backend turned them into. Pure data.
 */
import { Data, Option, Redacted } from "effect"
import type { SenderRule } from "./Address.ts"

export type AuthMethod = "PLAIN" | "LOGIN"

export class Credentials extends Data.Class<{
  readonly username: string
  readonly password: Redacted.Redacted<string>
  /** The SASL authorization identity, when the client sent one (PLAIN only). */
  readonly authzid: Option.Option<string>
  readonly method: AuthMethod
}> {}

export type AuthBackendName = "file" | "http" | "cakemail"

export class Principal extends Data.Class<{
  readonly username: string
  /**
   * The envelope and From addresses this principal may send as. `None` means the backend does not
   * restrict senders and the upstream API decides.
   */
  readonly senders: Option.Option<ReadonlyArray<SenderRule>>
  /** The bearer credential the upstream receives for this principal (an API key or access token). */
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  readonly backend: AuthBackendName
  /** The account at the backend, where it has one (Cakemail account id). */
  readonly account: Option.Option<string>
  /**
   * When the principal must be verified again (epoch millis, from Clock; a backend may set it before its
   * grant ends): the auth cache never keeps it longer.
   */
  readonly expiresAt: Option.Option<number>
}> {}

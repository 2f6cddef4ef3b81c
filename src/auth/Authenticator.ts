/**
 * Authenticator: verify(Credentials) → Principal, through Effect's Cache in front of the
 * CredentialStore. Keys are an HMAC of username and password (never the plaintext); accepted
 * credentials live AUTH_CACHE_TTL, rejected ones briefly, backend outages not at all.
 *
 * CONTRACT (lead): the service shape is shared; the helper that owns auth/ writes the layer.
 */
import { Context, Effect } from "effect"
import type { Credentials, Principal } from "../domain/Principal.ts"
import type { AuthError } from "./CredentialStore.ts"

export class Authenticator extends Context.Service<Authenticator, {
  readonly verify: (credentials: Credentials) => Effect.Effect<Principal, AuthError>
  /** Drops every cached entry for this principal (the upstream said 401/403 for its key). */
  readonly invalidate: (principal: Principal) => Effect.Effect<void>
}>()("smtp-gateway/auth/Authenticator") {}

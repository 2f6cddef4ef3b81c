/**
 * CredentialStore: where accounts come from (the auth backend). One interface, one implementation per
 * backend: `file` (the users file) here; `http` and `cakemail` in their own files. It verifies; it
 * does not cache (auth/Authenticator.ts does).
 *
 * CONTRACT (lead): the shape and errors below are shared; the helper that owns auth/ fills in layers.
 */
import { Context, Effect, Schema } from "effect"
import type { Credentials, Principal } from "../domain/Principal.ts"
import { Replies } from "../domain/Reply.ts"

/** Wrong username or password (or an account that may not log in). Cached briefly. */
export class InvalidCredentials extends Schema.TaggedError<InvalidCredentials>()("InvalidCredentials", {
  /** Said to the client after the standard text, when there is something useful to say (MFA). */
  hint: Schema.optional(Schema.String)
}) {}

/** The backend could not answer (timeout, 5xx, 429, unreadable users file). Never cached. */
export class BackendUnavailable extends Schema.TaggedError<BackendUnavailable>()("BackendUnavailable", {
  detail: Schema.String
}) {}

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: Schema.Union([InvalidCredentials, BackendUnavailable])
}) {
  get reply() {
    switch (this.reason._tag) {
      case "InvalidCredentials":
        return this.reason.hint === undefined ? Replies.authInvalid : Replies.authInvalidBecause(this.reason.hint)
      case "BackendUnavailable":
        return Replies.authUnavailable
    }
  }
}

export class CredentialStore extends Context.Service<CredentialStore, {
  readonly verify: (credentials: Credentials) => Effect.Effect<Principal, AuthError>
}>()("smtp-gateway/auth/CredentialStore") {}

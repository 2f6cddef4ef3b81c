/**
 * Upstream: the outbound transport behind one interface. `outbox` writes files, `http` posts the
 * canonical JSON to UPSTREAM_URL, `cakemail` (its own file) posts one email per recipient;
 * `layerMemory` records what was sent, for tests.
 *
 * CONTRACT (lead): the shape and errors below are shared; the helper that owns delivery/ fills in layers.
 */
import { Context, Effect, Schema } from "effect"
import type { Mailbox } from "../domain/Address.ts"
import type { CanonicalMessage, ReceivedMessage } from "../domain/Message.ts"
import type { Principal } from "../domain/Principal.ts"

/** One call to the upstream: the whole message, for the recipients of this call. */
export interface Outbound {
  /** The gateway id: `250 2.0.0 Ok: queued as <id>`, the outbox file name, the canonical `id`. */
  readonly id: string
  readonly message: CanonicalMessage
  /** The message as received: its digest keys the duplicate window. */
  readonly received: ReceivedMessage
  /** The message as it travels on (Bcc removed, Received added): what the outbox writes as .eml. */
  readonly raw: Uint8Array
  readonly principal: Principal
  /** All envelope recipients for a whole-message upstream; exactly one for a per-recipient one. */
  readonly recipients: ReadonlyArray<Mailbox>
  /** Stable across client retries of the same message (and recipient, for per-recipient upstreams). */
  readonly idempotencyKey: string
}

export interface UpstreamAccepted {
  /** The upstream's own id for what it accepted (logged, traced; not shown to the client). */
  readonly upstreamId: string
}

/**
 * Why an upstream call failed, classified once, here:
 * - Temporary: 429, 5xx, reset, refused: the client retries later (451 4.3.0);
 * - Timeout: the attempt ran out of time (451 4.4.1);
 * - Rejected: the API refused this message for good (400, 422, a rejected status) (554 5.6.0);
 * - TooLarge: 413 (552 5.3.4);
 * - Unauthorized: 401/403: the principal's key is no longer good (550 5.7.1).
 */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  kind: Schema.Literals(["Temporary", "Timeout", "Rejected", "TooLarge", "Unauthorized"]),
  /** Short and safe to show to the client (no secrets, no body). */
  detail: Schema.String,
  status: Schema.optional(Schema.Int),
  /** From a Retry-After header, in milliseconds. */
  retryAfterMillis: Schema.optional(Schema.Number)
}) {
  get isTemporary() {
    return this.kind === "Temporary" || this.kind === "Timeout"
  }
}

export class Upstream extends Context.Service<Upstream, {
  readonly name: "outbox" | "http" | "cakemail" | "memory"
  /** True when each call carries one recipient (Cakemail); Delivery then fans out. */
  readonly perRecipient: boolean
  readonly submit: (outbound: Outbound) => Effect.Effect<UpstreamAccepted, UpstreamError>
}>()("smtp-gateway/delivery/Upstream") {}

/**
 * DeadLetter: one JSON line per recipient the email API refused for good while others of the same
 * message were accepted (design.md §2 partial outcome), in `DATA_DIR/dead-letter/<date>.jsonl`, one
 * append per record. It holds who and why, never the message body; it retries nothing.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Context, DateTime, Effect, Layer } from "effect"
import { GatewayConfig } from "../Config.ts"

export interface DeadLetterRecord {
  readonly sessionId: string
  readonly gatewayId: string
  /** The Message-ID the upstream saw (generated when the message had none). */
  readonly messageId: string
  readonly recipient: string
  readonly reason: string
}

export class DeadLetter extends Context.Service<DeadLetter, {
  /** Appends one record; a write that fails is logged, never raised (the client's reply stands). */
  readonly record: (record: DeadLetterRecord) => Effect.Effect<void>
}>()("smtp-gateway/delivery/DeadLetter") {
  /** Records under `dir`, created (mode 0700) when the layer is built. */
  static readonly layerDir = (dir: string) =>
    Layer.effect(
      DeadLetter,
      Effect.gen(function*() {
        yield* Effect.promise(() => fs.mkdir(dir, { recursive: true, mode: 0o700 }))
        const record = Effect.fn("DeadLetter.record")(function*(entry: DeadLetterRecord) {
          const now = yield* DateTime.now
          const line = JSON.stringify({
            time: DateTime.formatIso(now),
            session_id: entry.sessionId,
            gateway_id: entry.gatewayId,
            message_id: entry.messageId,
            recipient: entry.recipient,
            reason: entry.reason
          }) + "\n"
          const file = path.join(dir, `${DateTime.formatIsoDateUtc(now)}.jsonl`)
          // one write with O_APPEND: concurrent records never interleave within a line
          yield* Effect.tryPromise(() => fs.appendFile(file, line, { mode: 0o600 })).pipe(
            Effect.catch((error) =>
              Effect.logError("could not write a dead-letter record", error.cause).pipe(
                Effect.annotateLogs({ gateway_id: entry.gatewayId, file })
              )
            )
          )
        })
        return DeadLetter.of({ record })
      })
    )

  /** `DATA_DIR/dead-letter`. */
  static readonly layer: Layer.Layer<DeadLetter, never, GatewayConfig> = Layer.unwrap(
    Effect.map(GatewayConfig, (config) => DeadLetter.layerDir(path.join(config.dataDir, "dead-letter")))
  )
}

/**
 * Parser: mailparser behind an Effect. ReceivedMessage bytes in, ParsedMessage out; an unparseable
 * message is a MessageRejected (554 5.6.0). The only module that imports mailparser.
 *
 * CONTRACT (lead): the service shape is shared; the helper that owns message/ writes the layer.
 */
import { Context, Effect } from "effect"
import type { MessageRejected } from "../domain/Errors.ts"
import type { ParsedMessage, ReceivedMessage } from "../domain/Message.ts"

export class Parser extends Context.Service<Parser, {
  readonly parse: (message: ReceivedMessage) => Effect.Effect<ParsedMessage, MessageRejected>
}>()("smtp-gateway/message/Parser") {}

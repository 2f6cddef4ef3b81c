import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { readFileSync } from "node:fs"
import type { AddressRef, ParsedMessage } from "../../src/domain/Message.ts"
import { Principal } from "../../src/domain/Principal.ts"
import { Parser } from "../../src/message/Parser.ts"
import { Validator } from "../../src/message/Validator.ts"
import { Senders, SendersUnavailable } from "../../src/policy/Senders.ts"

const principal = (senders: Option.Option<ReadonlyArray<string>>) =>
  new Principal({
    username: "alice",
    senders,
    apiKey: Option.none(),
    backend: "file",
    account: Option.none(),
    expiresAt: Option.none()
  })

const alice = principal(Option.some(["alice@example.test", "@team.example.test"]))

const parsedFrom = (from: ReadonlyArray<AddressRef>): ParsedMessage => ({
  messageId: "<m@example.test>",
  date: null,
  from,
  replyTo: [],
  to: [{ address: "bob@example.net", name: null }],
  cc: [],
  subject: "hi",
  text: "hi",
  html: null,
  headers: [],
  attachments: [],
  inReplyTo: null,
  references: []
})

const validate = (parsed: ParsedMessage, who: Principal = alice) =>
  Validator.use((validator) => validator.validate(parsed, who)).pipe(Effect.provide(Validator.layer))

describe("Validator", () => {
  it.effect("accepts a From address the principal may send as", () =>
    Effect.gen(function*() {
      yield* validate(parsedFrom([{ address: "alice@example.test", name: "Alice" }]))
      yield* validate(parsedFrom([{ address: "Carol@Team.Example.Test", name: null }]))
    }))

  it.effect("refuses a From address the principal may not send as with 550 5.7.1", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(validate(parsedFrom([{ address: "mallory@example.test", name: null }])))
      assert.strictEqual(error._tag, "SenderRejected")
      if (error._tag !== "SenderRejected") return assert.fail()
      assert.strictEqual(error.where, "from-header")
      assert.strictEqual(error.address, "mallory@example.test")
      assert.strictEqual(error.reply.toString(), "550 5.7.1 Sender address not allowed for this account")
    }))

  it.effect("leaves the decision to the upstream when the principal has no sender rules", () =>
    validate(parsedFrom([{ address: "anyone@example.org", name: null }]), principal(Option.none())))

  it.effect.each([
    ["no From address", [], "the message has no From address"],
    [
      "two From addresses",
      [{ address: "alice@example.test", name: null }, { address: "alice@example.test", name: "Again" }],
      "the message has more than one From address"
    ],
    ["a From address that is not an address", [{ address: "alice", name: null }], "the From address is not valid"]
  ] as const)("rejects a message with %s with 554 5.6.0", ([, from, reason]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(validate(parsedFrom(from)))
      assert.strictEqual(error._tag, "MessageRejected")
      if (error._tag !== "MessageRejected") return assert.fail()
      assert.strictEqual(error.reason, reason)
      assert.strictEqual(error.reply.toString(), `554 5.6.0 Message rejected: ${reason}`)
    }))

  it.effect("rejects the two-From fixture after parsing", () =>
    Effect.gen(function*() {
      const raw = new Uint8Array(readFileSync(new URL("../fixtures/messages/two-from.eml", import.meta.url)))
      const parsed = yield* Parser.use((parser) => parser.parse({ raw, size: raw.length, sha256: "" }))
      const error = yield* Effect.flip(validate(parsed))
      assert.strictEqual(error._tag, "MessageRejected")
    }).pipe(Effect.provide(Parser.layer)))

  it.effect("passes on SendersUnavailable when the sender list cannot be fetched", () =>
    Effect.gen(function*() {
      const unavailable = Layer.succeed(
        Senders,
        Senders.of({ allowed: () => Effect.fail(new SendersUnavailable({ detail: "senders API down" })) })
      )
      const error = yield* Effect.flip(
        Validator.use((validator) => validator.validate(parsedFrom([{ address: "alice@example.test", name: null }]), alice))
          .pipe(Effect.provide(Validator.layerNoDeps.pipe(Layer.provide(unavailable))))
      )
      assert.strictEqual(error._tag, "SendersUnavailable")
      assert.strictEqual(error.reply.code, 451)
    }))

  it.effect("asks Senders about the From address, not the envelope", () =>
    Effect.gen(function*() {
      const asked: Array<string> = []
      const recording = Layer.succeed(
        Senders,
        Senders.of({ allowed: (_, address) => Effect.sync(() => asked.push(address)).pipe(Effect.as(true)) })
      )
      yield* Validator.use((validator) =>
        validator.validate(parsedFrom([{ address: "alice@example.test", name: null }]), alice)
      ).pipe(Effect.provide(Validator.layerNoDeps.pipe(Layer.provide(recording))))
      assert.deepStrictEqual(asked, ["alice@example.test"])
    }))
})

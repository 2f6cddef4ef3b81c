import * as fs from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { transport } from "../support/Clients.ts"
import { alice, startGateway } from "../support/TestGateway.ts"

const send = (port: number, raw: string) =>
  Effect.promise(() =>
    transport(port, alice).sendMail({ envelope: { from: "alice@example.com", to: ["bob@example.net", "carol@example.org"] }, raw })
  ).pipe(Effect.map((info) => info.response))

const message = (messageId: string, body: string) =>
  `From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: retry\r\nMessage-ID: ${messageId}\r\n\r\n${body}\r\n`

describe("A client's retry of a delivered message", () => {
  it.live("gets the original 250 and id, and nothing is sent again", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const first = yield* send(gateway.smtpPort, message("<retry-1@example.com>", "Hello"))
      const again = yield* send(gateway.smtpPort, message("<retry-1@example.com>", "Hello"))
      assert.match(first, /^250 2\.0\.0 Ok: queued as \S+$/)
      assert.strictEqual(again, first)
      assert.strictEqual(fs.readdirSync(gateway.outboxDir).filter((f) => f.endsWith(".json")).length, 1)
    }))

  it.live("is not confused with another message that reuses the Message-ID, or one without any", () =>
    Effect.gen(function*() {
      const gateway = yield* startGateway()
      const first = yield* send(gateway.smtpPort, message("<reused@example.com>", "Hello"))
      const other = yield* send(gateway.smtpPort, message("<reused@example.com>", "Something else"))
      const bare = `From: alice@example.com\r\nTo: bob@example.net\r\nSubject: no id\r\n\r\nHi\r\n`
      const noId = [yield* send(gateway.smtpPort, bare), yield* send(gateway.smtpPort, bare)]
      assert.notStrictEqual(other, first)
      assert.notStrictEqual(noId[0], noId[1])
      assert.strictEqual(fs.readdirSync(gateway.outboxDir).filter((f) => f.endsWith(".json")).length, 4)
    }))
})

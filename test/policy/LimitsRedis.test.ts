import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { json, RecordingHttpServer } from "../support/RecordingHttpServer.ts"
import { startRedis } from "../support/Redis.ts"
import { connect, type SmtpClient } from "../support/SmtpClient.ts"
import { startGateway } from "../support/TestGateway.ts"
import { auth, secure } from "../smtp/harness.ts"

const message = "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: shared limits\r\n\r\nhello\r\n.\r\n"

const session = (port: number, user: string, password: string) =>
  Effect.gen(function*() {
    const client = yield* connect({ port })
    yield* secure(client)
    return { client, reply: yield* auth(client, user, password) }
  })

const send = (client: SmtpClient) =>
  Effect.gen(function*() {
    yield* client.sendLine("MAIL FROM:<alice@example.com>")
    const mail = (yield* client.readReply).last
    if (!mail.startsWith("250")) return mail
    yield* client.write(`RCPT TO:<bob@example.net>\r\nDATA\r\n`)
    yield* client.readReply
    yield* client.readReply
    yield* client.write(message)
    return (yield* client.readReply).last
  })

describe("Limits shared through Redis", () => {
  it.live("holds rate limits and AUTH lockouts across two gateways using the same Redis", () =>
    Effect.gen(function*() {
      const redis = yield* startRedis
      const authApi = yield* RecordingHttpServer.make
      yield* authApi.respondWith((request) => {
        const body = JSON.parse(request.body) as { username: string; password: string }
        return body.password === "right"
          ? json(200, { api_key: `key-${body.username}`, senders: ["alice@example.com"] })
          : json(401, { error: "invalid" })
      })
      const env = {
        REDIS_URL: redis.url,
        AUTH_BACKEND: "http",
        AUTH_URL: authApi.url,
        RATE_LIMIT_PER_IP: "2",
        AUTH_FAILURE_LIMIT: "2",
        AUTH_FAILURE_DELAY: "1 millis"
      }
      const [a, b] = yield* Effect.all([startGateway(env), startGateway(env)], { concurrency: 2 })

      // two messages per minute per IP, whichever gateway takes them
      const onA = yield* session(a.smtpPort, "alice", "right")
      assert.strictEqual(onA.reply, "235 2.7.0 Authentication successful")
      assert.match(yield* send(onA.client), /^250 2\.0\.0 /)
      const onB = yield* session(b.smtpPort, "alice", "right")
      assert.match(yield* send(onB.client), /^250 2\.0\.0 /)
      assert.match(yield* send(onA.client), /^451 4\.7\.1 Rate limit exceeded, try again in \d+ seconds$/)

      // carol fails once on each gateway: the pair is blocked on both, and the API is not asked again
      assert.match((yield* session(a.smtpPort, "carol", "wrong-1")).reply, /^535 5\.7\.8 /)
      assert.match((yield* session(b.smtpPort, "carol", "wrong-2")).reply, /^421 4\.7\.0 /)
      const asked = (yield* authApi.requests).length
      assert.strictEqual(
        (yield* session(a.smtpPort, "carol", "right")).reply,
        "421 4.7.0 Too many failed authentication attempts, try again later"
      )
      assert.strictEqual((yield* authApi.requests).length, asked)
    }))
})

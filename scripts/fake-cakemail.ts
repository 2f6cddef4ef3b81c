/**
 * `npm run fake-cakemail`: starts the Cakemail stand-in (test/support/FakeCakemail.ts) for a person to
 * try the gateway against: prints its URL, the test accounts and the environment to set, then logs one
 * line per request (method, path, status) until Ctrl-C. A tool, not part of the gateway.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { FakeCakemail } from "../test/support/FakeCakemail.ts"

const port = Number(process.env.FAKE_CAKEMAIL_PORT ?? "0")

const program = Effect.gen(function*() {
  const fake = yield* FakeCakemail.make({
    port: Number.isInteger(port) && port >= 0 && port <= 65535 ? port : 0,
    onResponse: (request, status) => console.log(`${request.method} ${request.path} -> ${status}`)
  })
  yield* Console.log(`Fake Cakemail API listening on ${fake.url}`)
  yield* Console.log("")
  yield* Console.log("Accounts (SMTP username / password, account id, confirmed senders):")
  for (const account of fake.accounts) {
    const senders = account.senders.filter((s) => s.confirmed).map((s) => `${s.email} (id ${s.id})`)
    const note = account.mfa ? "  [MFA: login is refused with a hint]" : ""
    yield* Console.log(`  ${account.username} / ${account.password}  account ${account.id}  ${senders.join(", ") || "-"}${note}`)
  }
  yield* Console.log("")
  yield* Console.log(`Run the gateway with: AUTH_BACKEND=cakemail UPSTREAM=cakemail CAKEMAIL_API_URL=${fake.url}`)
  yield* Console.log("Set FAKE_CAKEMAIL_PORT to choose the port. Ctrl-C stops.")
  return yield* Effect.never
})

NodeRuntime.runMain(Effect.scoped(program))

/**
 * The chaos run (issue 9): gateway processes with UPSTREAM=http in front of the unreliable stand-in
 * (ChaosUpstream.ts), and concurrent nodemailer clients (STARTTLS + AUTH PLAIN) that send messages with
 * several recipients each and retry on 4xx or a lost connection as an MTA does, some of them hanging up
 * when a reply is slow. `runRound` sends and counts; `problems` lists every broken promise of
 * design.md §2. Used by test/chaos/Chaos.test.ts (bounded) and scripts/chaos.ts (longer).
 */
import { Effect, Predicate } from "effect"
import nodemailer from "nodemailer"
import { transportOptions } from "../support/Clients.ts"
import { alice } from "../support/TestGateway.ts"
import { type ChaosCounts, type ChaosUpstream, slowMark, type StoredMessage } from "./ChaosUpstream.ts"

export interface ChaosOptions {
  readonly messages: number
  readonly recipientsPerMessage: number
  /** Concurrent SMTP clients; each keeps one connection per gateway. */
  readonly clients: number
  /** Every n-th client hangs up when a reply takes longer than `impatientMillis` (the client is gone). */
  readonly impatientEvery: number
  readonly impatientMillis: number
  /** Tries per message before a client gives up on it (it stays unacknowledged). */
  readonly maxTries: number
}

export const defaultOptions: ChaosOptions = {
  messages: 1000,
  recipientsPerMessage: 3,
  clients: 20,
  impatientEvery: 4,
  impatientMillis: 800,
  maxTries: 25
}

/** The gateway's settings for the run: short timeouts so it stays fast, limits out of the way. */
export const gatewayEnv = (upstreamUrl: string, redisUrl?: string): Record<string, string> => ({
  UPSTREAM: "http",
  UPSTREAM_URL: upstreamUrl,
  DELIVERY_DEADLINE: "5 seconds",
  UPSTREAM_TIMEOUT: "500 millis",
  RETRY_MAX_ATTEMPTS: "3",
  RETRY_BASE_DELAY: "50 millis",
  MAX_CONNECTIONS_PER_IP: "10000",
  RATE_LIMIT_PER_IP: "100000000",
  RATE_LIMIT_PER_USER: "100000000",
  ...(redisUrl === undefined ? {} : { REDIS_URL: redisUrl })
})

export interface GatewayPorts {
  readonly smtpPort: number
  readonly httpPort: number
}

export interface RoundReport {
  readonly label: string
  readonly honourKey: boolean
  readonly gateways: number
  readonly messages: number
  readonly recipients: number
  /** Messages a client got `250` for. */
  readonly acknowledged: number
  /** Messages a client gave up on after `maxTries` (still the client's: no promise broken). */
  readonly abandoned: number
  /** Client tries that ended in a 4xx, by reply code and enhanced code (e.g. `451 4.3.0`). */
  readonly temporaryReplies: Readonly<Record<string, number>>
  /** Client tries that ended without any reply (hung up on a slow reply, or the connection broke). */
  readonly noReply: number
  /** Tries that ended in a 5xx (none expected: the stand-in refuses nothing for good). */
  readonly permanentReplies: number
  readonly upstream: ChaosCounts
  /** Retries the gateways answered from the duplicate window (`smtp_emails_forwarded_total{result="duplicate"}`). */
  readonly preventedByGateway: number
  /** (message, recipient) pairs stored more than once, beyond the first. */
  readonly duplicatesStored: number
  /** Of those, the ones explained by an answer lost after storing (dropped by the stand-in, or abandoned). */
  readonly duplicatesFromDroppedAnswers: number
  readonly problems: ReadonlyArray<string>
  readonly seconds: number
}

const sleep = (millis: number) => new Promise<void>((resolve) => setTimeout(resolve, millis))

const rawMessage = (messageId: string, n: number, recipients: ReadonlyArray<string>) =>
  Buffer.from(
    [
      "From: Alice <alice@example.com>",
      `To: ${recipients.join(", ")}`,
      `Subject: chaos ${n}`,
      `Message-ID: ${messageId}`,
      "Date: Thu, 01 Jan 2026 00:00:00 +0000",
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=utf-8",
      "",
      `Message number ${n}.`,
      ""
    ].join("\r\n")
  )

/** The `smtp_emails_forwarded_total{result="duplicate"}` of one gateway. */
const duplicatesAnswered = async (gateway: GatewayPorts): Promise<number> => {
  const text = await (await fetch(`http://127.0.0.1:${gateway.httpPort}/metrics`)).text()
  const match = /^smtp_emails_forwarded_total\{[^}]*result="duplicate"[^}]*\} (\d+)/m.exec(text)
  return match === null ? 0 : Number(match[1])
}

interface Outcome {
  readonly messageId: string
  readonly recipients: ReadonlyArray<string>
  /** The id of the 250, when one came. */
  readonly queuedAs: string | undefined
}

/** Sends every message; each client takes the next one from the shared queue. */
const sendAll = async (
  gateways: ReadonlyArray<GatewayPorts>,
  label: string,
  options: ChaosOptions,
  tally: { temporary: Record<string, number>; noReply: number; permanent: number }
): Promise<ReadonlyArray<Outcome>> => {
  const queue = Array.from({ length: options.messages }, (_, n) => n)
  const outcomes: Array<Outcome> = []

  const client = async (index: number) => {
    const impatient = index % options.impatientEvery === 0
    const transports = gateways.map((gateway) =>
      nodemailer.createTransport({
        ...transportOptions(gateway.smtpPort, alice, `client-${index}.test`),
        pool: true,
        maxConnections: 1,
        ...(impatient ? { socketTimeout: options.impatientMillis } : {})
      })
    )
    try {
      // an impatient client's first message is answered slowly (ChaosUpstream's slowMark): it hangs up
      let slow = impatient
      for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
        const messageId = slow ? `<${label}-${n}${slowMark}chaos.test>` : `<${label}-${n}@chaos.test>`
        slow = false
        const recipients = Array.from({ length: options.recipientsPerMessage }, (_, k) => `r${k}-${n}@example.net`)
        const raw = rawMessage(messageId, n, recipients)
        let queuedAs: string | undefined
        for (let attempt = 0; attempt < options.maxTries && queuedAs === undefined; attempt++) {
          // a retry goes to the next gateway: with two processes, the window must span them
          const transport = transports[(index + attempt) % transports.length]!
          try {
            const info = await transport.sendMail({ envelope: { from: "alice@example.com", to: recipients }, raw })
            queuedAs = /queued as (\S+)/.exec(info.response)?.[1] ?? "?"
          } catch (error: unknown) {
            const code = Predicate.hasProperty(error, "responseCode") && Predicate.isNumber(error.responseCode)
              ? error.responseCode
              : undefined
            const response = Predicate.hasProperty(error, "response") && Predicate.isString(error.response)
              ? error.response
              : ""
            if (code === undefined) tally.noReply++
            else if (code >= 500) {
              tally.permanent++
              break
            } else {
              const key = response.split(" ").slice(0, 2).join(" ")
              tally.temporary[key] = (tally.temporary[key] ?? 0) + 1
            }
            await sleep(20 + Math.random() * 80)
          }
        }
        outcomes.push({ messageId, recipients, queuedAs })
      }
    } finally {
      for (const transport of transports) transport.close()
    }
  }

  await Promise.all(Array.from({ length: options.clients }, (_, i) => client(i)))
  return outcomes
}

/** Waits until the stand-in has seen no request for `quietMillis` (deliveries of gone clients end). */
const settle = async (upstream: ChaosUpstream, quietMillis: number) => {
  let last = -1
  while (upstream.counts().requests !== last) {
    last = upstream.counts().requests
    await sleep(quietMillis)
  }
}

/** What design.md §2 promises, checked against what the stand-in stored. */
const check = (
  outcomes: ReadonlyArray<Outcome>,
  stored: ReadonlyArray<StoredMessage>,
  droppedByKey: ReadonlyMap<string, number>,
  acceptedGatewayIds: ReadonlySet<string>,
  honourKey: boolean
) => {
  const problems: Array<string> = []
  const byMessage = new Map<string, Array<StoredMessage>>()
  for (const s of stored) byMessage.set(s.messageId, [...(byMessage.get(s.messageId) ?? []), s])

  for (const outcome of outcomes) {
    if (outcome.queuedAs === undefined) continue
    const copies = byMessage.get(outcome.messageId) ?? []
    for (const recipient of outcome.recipients) {
      if (!copies.some((c) => c.recipients.includes(recipient))) {
        problems.push(`${outcome.messageId} got 250 but was not stored for ${recipient}`)
      }
    }
    // the id is this submission's, or an earlier one's the API accepted (a retry answered from the window)
    if (!acceptedGatewayIds.has(outcome.queuedAs)) {
      problems.push(`${outcome.messageId} got 250 as ${outcome.queuedAs}, an id the API never accepted`)
    }
  }

  let duplicatesStored = 0
  let duplicatesFromDroppedAnswers = 0
  const pairs = new Map<string, number>()
  for (const s of stored) {
    for (const recipient of s.recipients) {
      const pair = `${s.messageId} ${recipient}`
      pairs.set(pair, (pairs.get(pair) ?? 0) + 1)
    }
  }
  for (const count of pairs.values()) duplicatesStored += count - 1

  const byKey = new Map<string, number>()
  for (const s of stored) byKey.set(s.idempotencyKey, (byKey.get(s.idempotencyKey) ?? 0) + 1)
  for (const [key, count] of byKey) {
    const explained = Math.min(count - 1, droppedByKey.get(key) ?? 0)
    duplicatesFromDroppedAnswers += explained * (stored.find((s) => s.idempotencyKey === key)?.recipients.length ?? 0)
    if (count - 1 > explained) {
      problems.push(`Idempotency-Key ${key.slice(0, 12)}… stored ${count} times with ${explained} lost answers`)
    }
  }
  if (honourKey && duplicatesStored > 0) {
    problems.push(`${duplicatesStored} (message, recipient) pairs stored twice though the API honours the key`)
  }
  return { problems, duplicatesStored, duplicatesFromDroppedAnswers }
}

/** One round: reset the stand-in, send every message through `gateways`, let deliveries end, check. */
export const runRound = (
  label: string,
  gateways: ReadonlyArray<GatewayPorts>,
  upstream: ChaosUpstream,
  honourKey: boolean,
  options: ChaosOptions = defaultOptions
): Effect.Effect<RoundReport> =>
  Effect.promise(async () => {
    const started = performance.now()
    upstream.reset()
    upstream.setHonourKey(honourKey)
    const duplicatesBefore = (await Promise.all(gateways.map(duplicatesAnswered))).reduce((a, b) => a + b, 0)
    const tally = { temporary: {} as Record<string, number>, noReply: 0, permanent: 0 }

    const outcomes = await sendAll(gateways, label, options, tally)
    await settle(upstream, 1500)

    const duplicatesAfter = (await Promise.all(gateways.map(duplicatesAnswered))).reduce((a, b) => a + b, 0)
    const checked = check(outcomes, upstream.stored(), upstream.droppedByKey(), upstream.acceptedGatewayIds(), honourKey)
    const acknowledged = outcomes.filter((o) => o.queuedAs !== undefined).length
    return {
      label,
      honourKey,
      gateways: gateways.length,
      messages: options.messages,
      recipients: options.messages * options.recipientsPerMessage,
      acknowledged,
      abandoned: outcomes.length - acknowledged,
      temporaryReplies: tally.temporary,
      noReply: tally.noReply,
      permanentReplies: tally.permanent,
      upstream: upstream.counts(),
      preventedByGateway: duplicatesAfter - duplicatesBefore,
      duplicatesStored: checked.duplicatesStored,
      duplicatesFromDroppedAnswers: checked.duplicatesFromDroppedAnswers,
      problems: checked.problems,
      seconds: Math.round((performance.now() - started) / 100) / 10
    }
  })

/** One line per round, for logs and the closing note. */
export const formatReport = (r: RoundReport): string =>
  [
    `${r.label}: ${r.gateways} gateway(s), key ${r.honourKey ? "honoured" : "ignored"}, ${r.seconds} s`,
    `  messages ${r.messages} x ${r.recipients / r.messages} recipients; 250 for ${r.acknowledged}, abandoned ${r.abandoned}`,
    `  client retries: ${Object.entries(r.temporaryReplies).map(([k, v]) => `${k} x${v}`).join(", ") || "none"}; ` +
    `no reply x${r.noReply}; 5xx x${r.permanentReplies}`,
    `  upstream: ${r.upstream.requests} requests, 500 x${r.upstream.error500}, 429 x${r.upstream.retryAfterShort} (1 s) + ` +
    `x${r.upstream.retryAfterLong} (30 s), hang x${r.upstream.hang}, reset x${r.upstream.reset}, ` +
    `dropped after storing x${r.upstream.dropped}, abandoned by the gateway x${r.upstream.abandoned}, replayed by key x${r.upstream.replayed}, stored ${r.upstream.stored}`,
    `  duplicates prevented by the gateway: ${r.preventedByGateway}; stored twice: ${r.duplicatesStored} ` +
    `(${r.duplicatesFromDroppedAnswers} from lost answers); problems: ${r.problems.length}`
  ].join("\n")

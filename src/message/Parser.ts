/**
 * Parser: mailparser behind an Effect. ReceivedMessage bytes in, ParsedMessage out; an unparseable
 * message, or one over a MIME limit (message/MimeLimits.ts), is a MessageRejected (554 5.6.0).
 * mailparser runs in a pool of worker threads (message/ParseWorker.ts, the only other module that
 * imports it) under a deadline: a hostile message costs a worker, which is replaced, never the event
 * loop. It reads; it decides nothing about what a message may contain (message/Validator.ts does).
 */
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { Context, DateTime, Duration, Effect, Layer, Predicate, Result, Semaphore } from "effect"
import type { AddressObject, EmailAddress, HeaderValue } from "mailparser"
import { GatewayConfig } from "../Config.ts"
import { MessageRejected } from "../domain/Errors.ts"
import { type AddressRef, type ParsedMessage, ReceivedBase64, type ReceivedMessage } from "../domain/Message.ts"
import { defaultMimeLimits, defaultParseTimeout, type MimeLimitOptions } from "./MimeLimits.ts"
import { type ParseOutcome, type ParseResult, workerRole } from "./ParseWorker.ts"
import { isBcc, named, type RawField, splitHeaderSection } from "./Transform.ts"

const unparseable = () => new MessageRejected({ reason: "the message could not be parsed" })
const notInTime = () => new MessageRejected({ reason: "the message could not be parsed in time" })

/** Runs one message through a parse worker (MIME limits, then mailparser) within a deadline. */
type RunMailParser = (
  bytes: Uint8Array,
  limits: MimeLimitOptions | undefined
) => Effect.Effect<ParseOutcome | { readonly _tag: "TimedOut" }>

/**
 * The worker's entry. Built (dist/*.js) it is ParseWorker.js. Run from sources (vitest, tsx) it is
 * ParseWorker.ts, which a worker can only load after registering tsx's loader itself (on Node 20 a
 * worker does not inherit `--import tsx`); tsx is a dev dependency, needed only then.
 */
const workerEntry = (): { readonly code: string | URL; readonly eval: boolean } => {
  if (!import.meta.url.endsWith(".ts")) return { code: new URL("./ParseWorker.js", import.meta.url), eval: false }
  const tsxDir = path.dirname(createRequire(import.meta.url).resolve("tsx/package.json"))
  const tsxApi = pathToFileURL(path.join(tsxDir, "dist/esm/api/index.mjs")).href
  const source = new URL("./ParseWorker.ts", import.meta.url).href
  return {
    code: `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(source)}) })` +
      `.catch((error) => { console.error(error); process.exit(1) })`,
    eval: true
  }
}

/** From this size on, a message goes to its worker in shared memory rather than as a copy. */
export const sharedFromBytes = 256 * 1024

/**
 * What `postMessage` gets for the message bytes: a small message is copied (cheap); a large one is
 * shared (a SharedArrayBuffer is never copied between threads; Body.ts already reads large messages
 * into one, anything else is copied into one here, once, where a clone would copy it twice).
 */
const shareable = (bytes: Uint8Array): Uint8Array => {
  if (bytes.byteLength < sharedFromBytes || bytes.buffer instanceof SharedArrayBuffer) return bytes
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.byteLength))
  shared.set(bytes)
  return shared
}

/**
 * A parse worker's young generation (V8's nursery, where every short-lived object starts): 6 MB rather
 * than V8's default of up to 48 MB. Decoding a large attachment makes one short-lived chunk after another,
 * and with the default a worker let tens of MB of them pile up between collections, on top of the
 * attachment itself. A small message's parse fills a fraction of it, so only large messages collect more
 * often. Measured with `npm run bench -- --only=large-25mb --systems=gateway`: peak RSS growth for the
 * 25 MB message 90-93 MB before, 80-89 MB after; tls-10x100's msg/cpu-s unchanged (431-505 before,
 * 461-465 after, within its noise).
 */
const workerResourceLimits = { maxYoungGenerationSizeMb: 6 }

interface PoolWorker {
  readonly worker: Worker
  /** Resolves true once the worker listens for jobs, false if it died first. */
  readonly ready: Promise<boolean>
  /** True once it has listened for jobs (no wait for `ready` then). */
  readonly started: boolean
}

/**
 * A pool of at most `size` parse workers. One job per worker at a time; the deadline runs from the
 * moment a started worker has the job (a worker's start-up is not the message's fault). A job past
 * its deadline, or a worker that fails, takes its worker down and a fresh one starts at once.
 * Closing the scope terminates them all.
 */
const makeWorkerPool = (size: number, deadline: Duration.Input) =>
  Effect.gen(function*() {
    const permits = yield* Semaphore.make(size)
    const idle: Array<PoolWorker> = []
    const all = new Set<Worker>()
    let closed = false
    let nextId = 0
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const worker of all) void worker.terminate()
        all.clear()
        idle.length = 0
      })
    )

    const entry = workerEntry()
    const spawn = (): PoolWorker => {
      const worker = new Worker(entry.code, {
        eval: entry.eval,
        workerData: { role: workerRole },
        resourceLimits: workerResourceLimits
      })
      worker.unref()
      all.add(worker)
      const ready = new Promise<boolean>((resolve) => {
        const onMessage = (message: unknown) => {
          if (!Predicate.hasProperty(message, "ready")) return
          worker.off("message", onMessage)
          resolve(true)
        }
        worker.on("message", onMessage)
        worker.once("exit", () => resolve(false))
      })
      return { worker, ready, started: false }
    }
    const retire = (worker: Worker) => {
      all.delete(worker)
      void worker.terminate()
      if (!closed && idle.length === 0) idle.push(spawn()) // warm again for the next message
    }

    const runOn = ({ worker }: PoolWorker, bytes: Uint8Array, limits: MimeLimitOptions | undefined) =>
      Effect.callback<ParseOutcome>((resume) => {
        const id = nextId++
        const cleanup = () => {
          worker.off("message", onMessage)
          worker.off("error", onFailure)
          worker.off("exit", onFailure)
        }
        const onMessage = (result: ParseResult) => {
          if (result.id !== id) return
          cleanup()
          idle.push({ worker, ready: Promise.resolve(true), started: true })
          resume(Effect.succeed(result.outcome))
        }
        const onFailure = () => {
          cleanup()
          retire(worker)
          resume(Effect.succeed({ _tag: "Unparseable" }))
        }
        worker.on("message", onMessage)
        worker.once("error", onFailure)
        worker.once("exit", onFailure)
        worker.postMessage({ id, bytes: shareable(bytes), limits })
        // interrupted (deadline, shutdown): the parse may never end, so the worker goes
        return Effect.sync(() => {
          cleanup()
          retire(worker)
        })
      })

    const job = (bytes: Uint8Array, limits: MimeLimitOptions | undefined) =>
      Effect.gen(function*() {
        const pooled = idle.pop() ?? spawn()
        if (!pooled.started && !(yield* Effect.promise(() => pooled.ready))) {
          retire(pooled.worker)
          return { _tag: "Unparseable" } as const
        }
        return yield* runOn(pooled, bytes, limits).pipe(
          Effect.timeoutOrElse({ duration: deadline, orElse: () => Effect.succeed({ _tag: "TimedOut" } as const) })
        )
      })

    idle.push(spawn()) // warm: the first message does not wait for a worker to start
    const run: RunMailParser = (bytes, limits) => Semaphore.withPermit(permits, job(bytes, limits))
    return run
  })

const isAddressObject = (u: unknown): u is AddressObject => Predicate.hasProperty(u, "value") && Array.isArray(u.value)

const flatten = (addresses: ReadonlyArray<EmailAddress>): Array<AddressRef> =>
  addresses.flatMap((entry) =>
    entry.group !== undefined
      ? flatten(entry.group)
      : Predicate.isString(entry.address) && entry.address !== ""
      ? [{ address: entry.address, name: entry.name.trim() === "" ? null : entry.name.trim() }]
      : []
  )

/** The addresses of an address header value: one AddressObject, or one per header line. */
const addressesOf = (value: HeaderValue | undefined): Array<AddressRef> =>
  (Array.isArray(value) ? value : [value]).flatMap((entry: unknown) => isAddressObject(entry) ? flatten(entry.value) : [])

const stringOf = (value: HeaderValue | undefined): string | null =>
  Predicate.isString(value) && value !== "" ? value : null

const stringsOf = (value: HeaderValue | undefined): Array<string> =>
  (Array.isArray(value) ? value : [value]).filter((entry: unknown): entry is string => Predicate.isString(entry) && entry !== "")

// RFC 5322 date: comments dropped; a date without a zone is read as UTC rather than local time.
const isoDate = (value: string): string | null => {
  const bare = value.replace(/\([^)]*\)/g, " ").trim()
  const millis = Date.parse(/(?:[+-]\d{4}|[A-Za-z]{1,5})$/.test(bare) ? bare : `${bare} +0000`)
  return Number.isNaN(millis) ? null : DateTime.formatIso(DateTime.makeUnsafe(millis))
}

const CRLF = new Uint8Array([0x0d, 0x0a])
const TO = new Uint8Array([0x54, 0x6f, 0x3a]) // "To:"

/**
 * Every address of several From fields. mailparser keeps only the last From, so the fields are
 * parsed again as To fields (which it keeps, all of them) of a message that is only a header section.
 */
const allFromAddresses = Effect.fnUntraced(function*(runMailParser: RunMailParser, fields: ReadonlyArray<RawField>) {
  const parts = fields.flatMap((field) => {
    const value = field.raw.subarray(field.raw.indexOf(0x3a) + 1)
    return [TO, value, ...(value[value.length - 1] === 0x0a ? [] : [CRLF])]
  })
  const outcome = yield* runMailParser(Buffer.concat([...parts, CRLF]), undefined)
  if (outcome._tag === "TimedOut") return yield* notInTime()
  if (outcome._tag !== "Parsed") return yield* unparseable()
  return addressesOf(outcome.parts.headers.get("to"))
})

const makeParse = (runMailParser: RunMailParser, limits: MimeLimitOptions) =>
  Effect.fnUntraced(
    function*(message: ReceivedMessage): Effect.fn.Return<ParsedMessage, MessageRejected> {
      // limits and mailparser first (in a worker), so the header section read here is bounded
      const outcome = yield* runMailParser(message.raw, limits)
      if (outcome._tag === "Refused") return yield* new MessageRejected({ reason: outcome.reason })
      if (outcome._tag === "TimedOut") return yield* notInTime()
      const section = splitHeaderSection(message.raw)
      if (Result.isFailure(section)) return yield* new MessageRejected({ reason: section.failure })
      if (outcome._tag === "Unparseable") return yield* unparseable()
      const mail = outcome.parts
      const fields = section.success.fields
      const fromFields = fields.filter(named("from"))
      const dateField = fields.find(named("date"))
      return {
        messageId: stringOf(mail.headers.get("message-id")),
        date: dateField === undefined ? null : isoDate(dateField.value),
        from: fromFields.length > 1
          ? yield* allFromAddresses(runMailParser, fromFields)
          : addressesOf(mail.headers.get("from")),
        replyTo: addressesOf(mail.headers.get("reply-to")),
        to: addressesOf(mail.headers.get("to")),
        cc: addressesOf(mail.headers.get("cc")),
        subject: stringOf(mail.headers.get("subject")),
        text: mail.text,
        html: mail.html,
        headers: fields.filter((field) => !isBcc(field)).map(({ name, value }) => ({ name, value })),
        attachments: mail.attachments.map(({ content, ...attachment }) => ({
          ...attachment,
          // base64 the worker left as it arrived: read from this thread's copy of the message
          content: content instanceof Uint8Array ? content : new ReceivedBase64(message.raw, content.start, content.end, content.size)
        })),
        inReplyTo: stringOf(mail.headers.get("in-reply-to")),
        references: stringsOf(mail.headers.get("references"))
      }
    },
    Effect.withSpan("message.parse")
  )

/** Parse workers: one per core, at least 2 and at most 8. */
const defaultWorkers = Math.min(8, Math.max(2, os.availableParallelism()))

export interface ParserOptions {
  /** Bounds one parse (from the moment a started worker has it), so no message can hang a session. */
  readonly timeout: Duration.Input
  readonly limits?: MimeLimitOptions | undefined
  readonly workers?: number | undefined
}

export class Parser extends Context.Service<Parser, {
  readonly parse: (message: ReceivedMessage) => Effect.Effect<ParsedMessage, MessageRejected>
}>()("smtp-gateway/message/Parser") {
  /** A worker pool for the layer's lifetime. */
  static readonly layerWith = (options: ParserOptions) =>
    Layer.effect(
      Parser,
      Effect.map(makeWorkerPool(options.workers ?? defaultWorkers, options.timeout), (run) =>
        Parser.of({ parse: makeParse(run, options.limits ?? defaultMimeLimits) }))
    )

  /** Default limits and deadline. */
  static readonly layer = Parser.layerWith({ timeout: defaultParseTimeout })

  /** MIME_MAX_* and PARSE_TIMEOUT from GatewayConfig. */
  static readonly layerConfig: Layer.Layer<Parser, never, GatewayConfig> = Layer.unwrap(
    Effect.map(GatewayConfig, ({ mime: { parseTimeout, ...limits } }) => Parser.layerWith({ timeout: parseTimeout, limits }))
  )
}

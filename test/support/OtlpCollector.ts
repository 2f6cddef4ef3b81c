/**
 * A stand-in for an OpenTelemetry collector: a real `node:http` server on loopback port 0 that accepts
 * OTLP/HTTP JSON trace exports (`POST /v1/traces`), decodes them and keeps every span, flattened.
 * Test support only: no protobuf, no metrics or logs signals, no sampling.
 */
import * as http from "node:http"
import { Context, type Duration, Effect, Layer, Result, Schema, type Scope } from "effect"
import { makeWaiters } from "../../src/capture/Waiters.ts"
import { listenOnLoopback } from "./RecordingHttpServer.ts"

/** A span as the tests read it: ids in hex, attributes as plain values. */
export interface CollectedSpan {
  readonly traceId: string
  readonly spanId: string
  /** Empty for a root span. */
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Readonly<Record<string, unknown>>
  readonly events: ReadonlyArray<{ readonly name: string; readonly attributes: Readonly<Record<string, unknown>> }>
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  readonly status: number
  /** The `service.name` of the exporting resource. */
  readonly serviceName: string
}

const AnyValue = Schema.Struct({
  stringValue: Schema.optional(Schema.String),
  intValue: Schema.optional(Schema.Union([Schema.Number, Schema.String])),
  doubleValue: Schema.optional(Schema.Number),
  boolValue: Schema.optional(Schema.Boolean)
})
const KeyValues = Schema.Array(Schema.Struct({ key: Schema.String, value: AnyValue }))

const ExportRequest = Schema.Struct({
  resourceSpans: Schema.Array(Schema.Struct({
    resource: Schema.optional(Schema.Struct({ attributes: Schema.optional(KeyValues) })),
    scopeSpans: Schema.Array(Schema.Struct({
      spans: Schema.Array(Schema.Struct({
        traceId: Schema.String,
        spanId: Schema.String,
        parentSpanId: Schema.optional(Schema.String),
        name: Schema.String,
        kind: Schema.optional(Schema.Number),
        attributes: Schema.optional(KeyValues),
        events: Schema.optional(Schema.Array(Schema.Struct({ name: Schema.String, attributes: Schema.optional(KeyValues) }))),
        status: Schema.optional(Schema.Struct({ code: Schema.optional(Schema.Number) }))
      }))
    }))
  }))
})
const decodeExport = Schema.decodeUnknownSync(Schema.fromJsonString(ExportRequest))

const valueOf = (value: typeof AnyValue.Type): unknown =>
  value.stringValue ?? (value.intValue === undefined ? undefined : Number(value.intValue)) ?? value.doubleValue ??
    value.boolValue

const toRecord = (entries: typeof KeyValues.Type | undefined): Record<string, unknown> =>
  Object.fromEntries((entries ?? []).map(({ key, value }) => [key, valueOf(value)]))

/** Flattens one decoded export request. */
export const flatten = (body: string): ReadonlyArray<CollectedSpan> =>
  decodeExport(body).resourceSpans.flatMap((resourceSpans) => {
    const serviceName = String(toRecord(resourceSpans.resource?.attributes)["service.name"] ?? "")
    return resourceSpans.scopeSpans.flatMap((scope) =>
      scope.spans.map((span): CollectedSpan => ({
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId ?? "",
        name: span.name,
        kind: span.kind ?? 0,
        attributes: toRecord(span.attributes),
        events: (span.events ?? []).map((event) => ({ name: event.name, attributes: toRecord(event.attributes) })),
        status: span.status?.code ?? 0,
        serviceName
      }))
    )
  })

export class OtlpCollector extends Context.Service<OtlpCollector, {
  readonly port: number
  /** The value for OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:<port>`. */
  readonly endpoint: string
  /** Every span received so far, in arrival order. */
  readonly spans: Effect.Effect<ReadonlyArray<CollectedSpan>>
  /** The body of every export request, as received (a batch is one request). */
  readonly bodies: Effect.Effect<ReadonlyArray<string>>
  /** Waits (real time, up to `timeout`) until the spans received satisfy `ready`; fails with what arrived. */
  readonly awaitSpans: (
    ready: (spans: ReadonlyArray<CollectedSpan>) => boolean,
    timeout?: Duration.Input
  ) => Effect.Effect<ReadonlyArray<CollectedSpan>, Error>
}>()("smtp-gateway/test/OtlpCollector") {
  /** A collector for the current scope. A body that is not OTLP JSON is answered with 400 and kept out. */
  static readonly make: Effect.Effect<OtlpCollector["Service"], never, Scope.Scope> = Effect.gen(function*() {
    const received: Array<CollectedSpan> = []
    const bodies: Array<string> = []
    const waiters = makeWaiters()

    const server = http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        if (req.method !== "POST" || req.url !== "/v1/traces") return void res.writeHead(404).end()
        const body = Buffer.concat(chunks).toString("utf8")
        try {
          received.push(...flatten(body))
          bodies.push(body)
        } catch (error) {
          return void res.writeHead(400, { "content-type": "text/plain" }).end(String(error))
        }
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
        waiters.wake()
      })
    })

    const port = yield* listenOnLoopback(server)

    const awaitSpans = (ready: (spans: ReadonlyArray<CollectedSpan>) => boolean, timeout: Duration.Input = "10 seconds") =>
      waiters.until(
        (): Result.Result<ReadonlyArray<CollectedSpan>, Error> | undefined =>
          ready(received) ? Result.succeed([...received]) : undefined,
        timeout,
        () => new Error(`the collector did not receive the expected spans; got: ${received.map((s) => s.name).join(", ")}`)
      )

    return OtlpCollector.of({
      port,
      endpoint: `http://127.0.0.1:${port}`,
      spans: Effect.sync(() => [...received]),
      bodies: Effect.sync(() => [...bodies]),
      awaitSpans
    })
  })

  static readonly layer: Layer.Layer<OtlpCollector> = Layer.effect(OtlpCollector, OtlpCollector.make)
}

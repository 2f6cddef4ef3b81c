/**
 * Telemetry: OTLP/HTTP trace export when OTEL_EXPORTER_OTLP_ENDPOINT is set (batched, flushed when
 * the layer closes at shutdown), nothing otherwise. Spans themselves are opened where the work is.
 */
import { Effect, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { GatewayConfig } from "../Config.ts"
import { version } from "../version.ts"

export const TelemetryLive = Layer.unwrap(
  Effect.gen(function*() {
    const { otel } = yield* GatewayConfig
    if (Option.isNone(otel.endpoint)) return Layer.empty
    const base = otel.endpoint.value.href.replace(/\/+$/, "")
    return OtlpTracer.layer({
      url: `${base}/v1/traces`,
      resource: { serviceName: otel.serviceName, serviceVersion: version },
      exportInterval: "2 seconds",
      shutdownTimeout: "5 seconds"
    }).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(FetchHttpClient.layer))
  })
)

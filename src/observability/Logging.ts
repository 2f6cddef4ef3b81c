/**
 * The gateway's loggers, chosen by LOG_FORMAT: `json` writes one JSON object per line on stdout
 * (time, level, message, every log annotation, trace_id/span_id inside a span, cause on errors);
 * `pretty` is Effect's pretty logger. Both keep the tracer logger (logs become span events) and honour
 * LOG_LEVEL. Redacted values print as `<redacted>`. Where logs go beyond stdout is not decided here.
 */
import { Array, Cause, Console, Context, Effect, Formatter, Layer, Logger, type LogLevel, Redacted, References, Tracer } from "effect"
import { GatewayConfig, type LogLevel as ConfigLogLevel } from "../Config.ts"

/** The fields of a line that no annotation may overwrite. */
const reserved = new Set(["time", "level", "message", "trace_id", "span_id", "cause"])

/** `sessionId` → `session_id`, so every field of a line reads the same way. */
const snakeCase = (key: string) => key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase()

const messagePart = (part: unknown): string =>
  typeof part === "string" ? part : typeof part === "bigint" ? String(part) : Redacted.isRedacted(part) ? "<redacted>" : Formatter.formatJson(part)

/**
 * True when every field is a string, number, boolean or null (the usual line): JSON.stringify then
 * writes exactly what Formatter.formatJson would, without its per-value replacer.
 */
const isFlat = (line: Record<string, unknown>): boolean => {
  for (const key in line) {
    const value = line[key]
    if (value !== null && typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") return false
  }
  return true
}

/** One log entry as one line of JSON. */
const formatJsonLine: Logger.Logger<unknown, string> = Logger.make(({ cause, date, fiber, logLevel, message }) => {
  const line: Record<string, unknown> = {
    time: date.toISOString(),
    level: logLevel.toLowerCase(),
    message: Array.ensure(message).map(messagePart).join(" ")
  }
  for (const [key, value] of Object.entries(fiber.getRef(References.CurrentLogAnnotations))) {
    const field = snakeCase(key)
    if (!reserved.has(field)) line[field] = Redacted.isRedacted(value) ? "<redacted>" : value
  }
  const span = Context.getOption(fiber.context, Tracer.ParentSpan)
  if (span._tag === "Some") {
    line.trace_id = span.value.traceId
    line.span_id = span.value.spanId
  }
  if (cause.reasons.length > 0) line.cause = Cause.pretty(cause)
  return isFlat(line) ? JSON.stringify(line) : Formatter.formatJson(line)
})

/**
 * Lines for stdout, written together: every line logged in one turn of the event loop goes out in one
 * write (stdout to a file or a pipe is a synchronous syscall per write). Nothing is dropped: the lines
 * are written at the latest on the next turn (`setImmediate`), and at once when the process exits.
 */
const stdoutLines: Array<string> = []
let flushScheduled = false

/** Writes the lines waiting for stdout now (idempotent). */
const flushStdout = (): void => {
  flushScheduled = false
  if (stdoutLines.length === 0) return
  const text = stdoutLines.join("\n") + "\n"
  stdoutLines.length = 0
  process.stdout.write(text)
}

const writeStdoutLine = (line: string): void => {
  stdoutLines.push(line)
  if (flushScheduled) return
  flushScheduled = true
  setImmediate(flushStdout)
}

process.once("exit", flushStdout)

/**
 * Writes `formatJsonLine` through the fiber's Console: on the default Console (stdout) through the
 * buffer above, one write per turn of the event loop; any other Console (a test's) line by line.
 */
const jsonLogger: Logger.Logger<unknown, void> = Logger.make((options) => {
  const console = options.fiber.getRef(Console.Console)
  const line = formatJsonLine.log(options)
  if (console === globalThis.console) writeStdoutLine(line)
  else console.log(line)
})

const minimumLevel: Record<ConfigLogLevel, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error"
}

/** Replaces the default loggers according to LOG_FORMAT and LOG_LEVEL. */
export const layer: Layer.Layer<never, never, GatewayConfig> = Layer.unwrap(
  Effect.gen(function*() {
    const { log } = yield* GatewayConfig
    return Layer.mergeAll(
      Logger.layer([log.format === "json" ? jsonLogger : Logger.consolePretty(), Logger.tracerLogger]),
      Layer.succeed(References.MinimumLogLevel, minimumLevel[log.level])
    )
  })
)

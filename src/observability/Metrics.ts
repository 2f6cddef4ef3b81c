/**
 * The gateway's Prometheus metrics (design.md §6): names are a public contract. Labels are bounded
 * enumerations; none carries a user name, address or IP. Definitions only: each stage updates its own.
 */
import { Metric } from "effect"

/** Seconds; SMTP stages and API calls on loopback sit in the low milliseconds, slow APIs in seconds. */
const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export const connectionsTotal = Metric.counter("smtp_connections_total", {
  description: "SMTP connections by how they were received (result: accepted, rejected)",
  incremental: true
})
export const activeConnections = Metric.gauge("smtp_active_connections", {
  description: "SMTP connections open now"
})
export const emailsReceived = Metric.counter("smtp_emails_received_total", {
  description: "Messages whose DATA was received in full",
  incremental: true
})
export const emailsForwarded = Metric.counter("smtp_emails_forwarded_total", {
  description: "Messages by outcome (result: accepted, partial, rejected, temporary_failure, duplicate)",
  incremental: true
})
export const authFailures = Metric.counter("smtp_auth_failures_total", {
  description: "Failed AUTH attempts (reason: invalid_credentials, backend_unavailable, malformed, locked_out)",
  incremental: true
})
export const apiErrors = Metric.counter("smtp_api_errors_total", {
  description: "Failed upstream API calls (type: timeout, temporary, rejected, too_large, unauthorized, circuit_open)",
  incremental: true
})
export const processingDuration = Metric.histogram("smtp_processing_duration_seconds", {
  description: "From the final dot to the reply: parse, validate, transform and deliver",
  boundaries: latencyBuckets
})
export const apiLatency = Metric.histogram("smtp_api_latency_seconds", {
  description: "One upstream API call (one attempt)",
  boundaries: latencyBuckets
})
export const connectionDuration = Metric.histogram("smtp_connection_duration_seconds", {
  description: "How long SMTP connections stay open",
  boundaries: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]
})
export const apiKeyCacheSize = Metric.gauge("smtp_api_key_cache_size", {
  description: "Credentials held in the authentication cache"
})
export const circuitBreakerState = Metric.gauge("smtp_circuit_breaker_state", {
  description: "Upstream circuit breaker: 0 closed, 1 half-open, 2 open"
})
export const bareLineEndings = Metric.counter("smtp_bare_line_endings_total", {
  description: "Bare CR or LF line endings found in message bodies (each rewritten to CRLF)",
  incremental: true
})
export const messageMemory = Metric.gauge("smtp_message_memory_bytes", {
  description: "Bytes of messages held now, across every session (at most MAX_MESSAGE_MEMORY)"
})

/**
 * A real `node:http` server on loopback port 0 for tests of HTTP clients (upstreams, auth backends):
 * records each request's method, path, headers and body, and answers from a handler the test sets.
 * Test support only; not a mock of any particular API.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Context, Effect, Layer, Ref, type Scope } from "effect"

export interface RecordedRequest {
  readonly method: string
  /** Path and query, as sent. */
  readonly path: string
  /** Header names lower-cased, as Node gives them. */
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

export interface CannedResponse {
  readonly status: number
  readonly headers?: Readonly<Record<string, string>>
  /** A string is sent as is; anything else as JSON (with a JSON content type unless one is given). */
  readonly body?: unknown
  /** Wait this long (real milliseconds) before answering. */
  readonly delayMillis?: number
}

/** Listens on loopback port 0 for the current scope (then closes, cutting open connections); gives the port. */
export const listenOnLoopback = (server: http.Server): Effect.Effect<number, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<number>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
    }),
    () =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  )

export type Handler = (request: RecordedRequest) => CannedResponse

export const json = (status: number, body: unknown, headers?: Readonly<Record<string, string>>): CannedResponse => ({
  status,
  body,
  ...(headers === undefined ? {} : { headers })
})

export class RecordingHttpServer extends Context.Service<RecordingHttpServer, {
  readonly port: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** Every request received so far, in arrival order. */
  readonly requests: Effect.Effect<ReadonlyArray<RecordedRequest>>
  /** How the next requests are answered (default: `200 {}`). */
  readonly respondWith: (handler: Handler) => Effect.Effect<void>
}>()("smtp-gateway/test/RecordingHttpServer") {
  /** A server for the current scope; closed (connections too) when the scope closes. */
  static readonly make: Effect.Effect<RecordingHttpServer["Service"], never, Scope.Scope> = Effect.gen(function*() {
    const requests = yield* Ref.make<ReadonlyArray<RecordedRequest>>([])
    let handler: Handler = () => json(200, {})

    const server = http.createServer((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        const recorded: RecordedRequest = {
          method: req.method ?? "",
          path: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8")
        }
        Effect.runSync(Ref.update(requests, (all) => [...all, recorded]))
        let answer: CannedResponse
        try {
          answer = handler(recorded)
        } catch (e) {
          answer = { status: 500, body: `handler threw: ${String(e)}` }
        }
        const send = () => {
          const text = answer.body === undefined
            ? ""
            : typeof answer.body === "string"
            ? answer.body
            : JSON.stringify(answer.body)
          const headers: Record<string, string> = {
            ...(answer.body !== undefined && typeof answer.body !== "string"
              ? { "content-type": "application/json" }
              : {}),
            ...answer.headers
          }
          res.writeHead(answer.status, headers).end(text)
        }
        if (answer.delayMillis !== undefined) setTimeout(send, answer.delayMillis)
        else send()
      })
    })

    const port = yield* listenOnLoopback(server)

    return RecordingHttpServer.of({
      port,
      url: `http://127.0.0.1:${port}`,
      requests: Ref.get(requests),
      respondWith: (next) => Effect.sync(() => void (handler = next))
    })
  })

  static readonly layer: Layer.Layer<RecordingHttpServer> = Layer.effect(RecordingHttpServer, RecordingHttpServer.make)
}

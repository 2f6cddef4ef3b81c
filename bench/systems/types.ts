/**
 * What the benchmark runner needs from a system under test: how to start it for a mode and an
 * upstream, which processes to measure, and how a client logs in. Implementations live beside this file.
 */
export type Mode = "plain" | "tls"
export type UpstreamKind = "fast" | "slow" | "cakemail"

export interface Environment {
  readonly repo: string
  readonly work: string
  readonly certPath: string
  readonly keyPath: string
  readonly upstreamUrl: string
  readonly slowUpstreamUrl: string
  readonly collectorUrl: string
  readonly cakemailUrl: string
  readonly logDir: string
}

export interface StartOptions {
  readonly mode: Mode
  readonly upstream: UpstreamKind
  /** Extra node flags for Node-based systems (e.g. --cpu-prof). */
  readonly nodeFlags?: ReadonlyArray<string> | undefined
}

export interface Running {
  readonly port: number
  /** The processes whose CPU and RSS count (re-read: multi-process systems fork workers). */
  readonly pids: () => ReadonlyArray<number>
  /** How the client talks to it in this mode (a system without a plain mode still needs STARTTLS+AUTH). */
  readonly starttls: boolean
  readonly auth: { readonly user: string; readonly pass: string } | undefined
  readonly mailFrom: string
  /** What the mode really is for this system, when it differs from the scenario's. */
  readonly note: string | undefined
  readonly stop: () => Promise<void>
}

export interface System {
  readonly id: string
  readonly label: string
  /** Whether the system runs behind an HTTP upstream whose posts can be counted. */
  readonly postsToUpstream: boolean
  /** Undefined when it can run here; else why not (the column is then left out). */
  readonly unavailable: (env: Environment) => Promise<string | undefined>
  readonly start: (env: Environment, options: StartOptions) => Promise<Running>
}

// Offline validation of deployment/ (Helm chart, cert-manager manifests, compose file) and flake.nix,
// for machines without Docker, Helm or a Nix store. Renders the chart with the Helm engine
// re-implementation in deployment/validate/helm-render (Go text/template + sprig, from Debian
// packages), checks every rendered object against the Kubernetes/cert-manager/Prometheus Operator
// schemas shipped by kubernetes-models, YAML-parses every non-template file, and parses flake.nix
// with nix-instantiate. Not checked: unknown fields (the schemas allow extra properties), Helm itself.
import { execFileSync, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import * as Core from "kubernetes-models/v1"
import * as Apps from "kubernetes-models/apps/v1"
import * as Autoscaling from "kubernetes-models/autoscaling/v2"
import * as Networking from "kubernetes-models/networking.k8s.io/v1"
import * as Policy from "kubernetes-models/policy/v1"
import * as CertManager from "@kubernetes-models/cert-manager/cert-manager.io/v1"
import * as Monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1"
import { parseAllDocuments } from "yaml"
import { Predicate } from "effect"

export const root = join(dirname(fileURLToPath(import.meta.url)), "..")
export const chartDir = join(root, "deployment/helm/smtp-gateway")
const rendererSource = join(root, "deployment/validate/helm-render/main.go")
/** Where Debian's golang-*-dev packages put Go sources (GOPATH mode). */
const debianGoPath = "/usr/share/gocode"

export interface Manifest {
  readonly source: string
  readonly apiVersion: string
  readonly kind: string
  readonly metadata: { readonly name: string; readonly namespace?: string }
  readonly [key: string]: unknown
}

const onPath = (tool: string): boolean =>
  spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status === 0

/** Why the Helm renderer cannot be built here, or undefined when it can. */
export const rendererUnavailable = (): string | undefined => {
  if (!onPath("go")) return "go is not installed (Debian: golang-go)"
  if (!existsSync(join(debianGoPath, "src/github.com/Masterminds/sprig"))) {
    return "sprig sources are missing (Debian: golang-github-masterminds-sprig-dev)"
  }
  if (!existsSync(join(debianGoPath, "src/sigs.k8s.io/yaml"))) {
    return "sigs.k8s.io/yaml sources are missing (Debian: golang-k8s-sigs-yaml-dev)"
  }
  return undefined
}

let rendererPath: string | undefined

/** Builds deployment/validate/helm-render once per source version (cached in the temp dir). */
export const buildRenderer = (): string => {
  if (rendererPath !== undefined) return rendererPath
  const source = readFileSync(rendererSource)
  const hash = createHash("sha256").update(source).digest("hex").slice(0, 16)
  const dir = join(tmpdir(), "smtp-gateway-helm-render")
  const binary = join(dir, `helm-render-${hash}`)
  if (!existsSync(binary)) {
    mkdirSync(dir, { recursive: true })
    execFileSync("go", ["build", "-o", binary, rendererSource], {
      env: { ...process.env, GO111MODULE: "off", GOPATH: debianGoPath, GOFLAGS: "" },
      stdio: ["ignore", "ignore", "pipe"]
    })
  }
  rendererPath = binary
  return binary
}

export interface RenderOptions {
  readonly valuesFiles?: ReadonlyArray<string>
  readonly kubeVersion?: string
  readonly apiVersions?: ReadonlyArray<string>
  readonly release?: string
  readonly namespace?: string
}

export interface Rendered {
  readonly manifests: ReadonlyArray<Manifest>
  readonly notes: string
}

/** Renders the chart like `helm template`; throws with the renderer's message on a template error. */
export const renderChart = (options: RenderOptions = {}): Rendered => {
  const args = [
    "--json",
    "--name", options.release ?? "smtp-gateway",
    "--namespace", options.namespace ?? "smtp-gateway",
    "--kube-version", options.kubeVersion ?? "1.30.0"
  ]
  for (const file of options.valuesFiles ?? []) args.push("-f", file)
  for (const v of options.apiVersions ?? []) args.push("--api-versions", v)
  args.push(chartDir)
  const result = spawnSync(buildRenderer(), args, { encoding: "utf8" })
  if (result.status !== 0) throw new Error(result.stderr.trim() || `helm-render exited ${result.status}`)
  const output: unknown = JSON.parse(result.stdout)
  if (!Predicate.isObject(output) || !Predicate.isObject(output.manifests) || typeof output.notes !== "string") {
    throw new Error("helm-render printed an unexpected shape")
  }
  const manifests: Array<Manifest> = []
  for (const [source, text] of Object.entries(output.manifests)) {
    if (typeof text !== "string") continue
    for (const doc of parseYamlDocuments(text, source)) {
      if (doc === null) continue
      if (!Predicate.isObject(doc) || typeof doc.apiVersion !== "string" || typeof doc.kind !== "string" ||
        !Predicate.isObject(doc.metadata) || typeof doc.metadata.name !== "string") {
        throw new Error(`${source}: a rendered document lacks apiVersion, kind or metadata.name`)
      }
      manifests.push({ ...doc, source } as Manifest)
    }
  }
  return { manifests, notes: output.notes }
}

/** Parses a YAML stream strictly (YAML 1.2, duplicate keys are errors); throws naming the file. */
export const parseYamlDocuments = (text: string, name: string): Array<unknown> =>
  parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true }).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${name}: ${doc.errors.map((e) => e.message).join("; ")}`)
    if (doc.warnings.length > 0) throw new Error(`${name}: ${doc.warnings.map((e) => e.message).join("; ")}`)
    return doc.toJS()
  })

type ModelClass = new (data: never) => { validate(): void }
const models: Record<string, ModelClass> = {
  "v1/ConfigMap": Core.ConfigMap,
  "v1/Secret": Core.Secret,
  "v1/Service": Core.Service,
  "v1/ServiceAccount": Core.ServiceAccount,
  "apps/v1/Deployment": Apps.Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": Autoscaling.HorizontalPodAutoscaler,
  "networking.k8s.io/v1/NetworkPolicy": Networking.NetworkPolicy,
  "policy/v1/PodDisruptionBudget": Policy.PodDisruptionBudget,
  "cert-manager.io/v1/Certificate": CertManager.Certificate,
  "cert-manager.io/v1/ClusterIssuer": CertManager.ClusterIssuer,
  "monitoring.coreos.com/v1/ServiceMonitor": Monitoring.ServiceMonitor
}

/** Schema errors of one object ("" when valid); an unknown apiVersion/kind is an error. */
export const schemaErrors = (object: Record<string, unknown>): string => {
  const key = `${String(object.apiVersion)}/${String(object.kind)}`
  const Model = models[key]
  if (Model === undefined) return `no schema for ${key}`
  const { source: _source, ...data } = object
  try {
    new Model(data as never).validate()
    return ""
  } catch (error) {
    return `${key}: ${error instanceof Error ? error.message : String(error)}`
  }
}

const walk = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry)
    return statSync(path).isDirectory() ? walk(path) : [path]
  })

/** Every YAML file under deployment/ that is not a Helm template. */
export const plainYamlFiles = (): Array<string> =>
  walk(join(root, "deployment"))
    .filter((file) => /\.ya?ml$/.test(file) || file.endsWith(".yamllint"))
    .filter((file) => !relative(chartDir, file).startsWith("templates"))
    .sort()

/** yamllint's complaints about the plain YAML files, or undefined when yamllint is absent. */
export const yamllint = (files: ReadonlyArray<string>): string | undefined => {
  if (!onPath("yamllint")) return undefined
  const result = spawnSync("yamllint", ["-f", "parsable", "-c", join(root, "deployment/.yamllint"), ...files], {
    encoding: "utf8"
  })
  return result.status === 0 ? "" : (result.stdout + result.stderr).trim()
}

/** nix-instantiate --parse flake.nix: "" when it parses, the error otherwise, undefined without Nix. */
export const parseFlake = (): string | undefined => {
  if (!onPath("nix-instantiate")) return undefined
  const result = spawnSync("nix-instantiate", ["--parse", join(root, "flake.nix")], { encoding: "utf8" })
  return result.status === 0 ? "" : result.stderr.trim()
}

export const valuesFiles = {
  default: [] as ReadonlyArray<string>,
  production: [join(chartDir, "values-production.yaml")],
  staging: [join(chartDir, "values-staging.yaml")]
} as const

const main = (): number => {
  let failures = 0
  const report = (ok: boolean, what: string, detail = "") => {
    if (!ok) failures++
    console.log(`${ok ? "ok  " : "FAIL"} ${what}${detail ? `\n     ${detail.replace(/\n/g, "\n     ")}` : ""}`)
  }
  const skip = (what: string, why: string) => console.log(`skip ${what}: ${why}`)

  const files = plainYamlFiles()
  for (const file of files) {
    try {
      const docs = parseYamlDocuments(readFileSync(file, "utf8"), file)
      const errors = file.includes("cert-manager/")
        ? docs.filter(Predicate.isObject).map(schemaErrors).filter((e) => e !== "")
        : []
      report(errors.length === 0, `YAML ${relative(root, file)}`, errors.join("\n"))
    } catch (error) {
      report(false, `YAML ${relative(root, file)}`, String(error))
    }
  }
  const lint = yamllint(files)
  if (lint === undefined) skip("yamllint", "yamllint is not installed (Debian: yamllint)")
  else report(lint === "", "yamllint deployment/ (non-template files)", lint)

  const unavailable = rendererUnavailable()
  if (unavailable !== undefined) skip("Helm chart rendering", unavailable)
  else {
    for (const [name, files] of Object.entries(valuesFiles)) {
      try {
        const { manifests } = renderChart({ valuesFiles: files, apiVersions: ["monitoring.coreos.com/v1"] })
        const errors = manifests.map((m) => schemaErrors(m)).filter((e) => e !== "")
        report(errors.length === 0, `chart with ${name} values: ${manifests.length} objects rendered and schema-checked`,
          errors.join("\n"))
      } catch (error) {
        report(false, `chart with ${name} values`, String(error))
      }
    }
  }

  const flake = parseFlake()
  if (flake === undefined) skip("flake.nix", "nix-instantiate is not installed (Debian: nix-bin)")
  else report(flake === "", "nix-instantiate --parse flake.nix", flake)

  console.log(failures === 0 ? "deployment: all checks passed" : `deployment: ${failures} check(s) failed`)
  return failures === 0 ? 0 : 1
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main()
}

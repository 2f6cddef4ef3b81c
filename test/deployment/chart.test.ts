// The Helm chart, rendered offline by deployment/validate/helm-render (Helm's engine on Go
// text/template + sprig) and checked against the Kubernetes, cert-manager and Prometheus Operator
// schemas. Skips only when the Go toolchain or the Debian Go sources it builds from are absent.
import { assert, describe, it } from "@effect/vitest"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  type Manifest,
  type RenderOptions,
  renderChart,
  rendererUnavailable,
  schemaErrors,
  valuesFiles
} from "../../scripts/validate-deployment.ts"

const unavailable = rendererUnavailable()
const title = unavailable === undefined
  ? "Helm chart"
  : `Helm chart (skipped: ${unavailable}; apt-get install golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev)`

const tmp = mkdtempSync(join(tmpdir(), "smtp-gateway-values-"))
let counter = 0
const valuesFile = (yaml: string): string => {
  const file = join(tmp, `values-${counter++}.yaml`)
  writeFileSync(file, yaml)
  return file
}

const render = (options: RenderOptions = {}): ReadonlyArray<Manifest> =>
  renderChart({ apiVersions: ["monitoring.coreos.com/v1"], ...options }).manifests

const one = (manifests: ReadonlyArray<Manifest>, kind: string, name?: string): Record<string, any> => {
  const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name))
  assert.strictEqual(found.length, 1, `expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length}`)
  return found[0] as Record<string, any>
}

const container = (manifests: ReadonlyArray<Manifest>): Record<string, any> =>
  one(manifests, "Deployment").spec.template.spec.containers[0]

const renderError = (yaml: string): string => {
  try {
    render({ valuesFiles: [valuesFile(yaml)] })
  } catch (error) {
    return String(error)
  }
  return assert.fail("rendering should have failed")
}

describe.skipIf(unavailable !== undefined)(title, () => {
  for (const [name, files] of Object.entries(valuesFiles)) {
    it(`renders with the ${name} values into objects that all pass their API schemas`, () => {
      const manifests = render({ valuesFiles: files })
      assert.isAbove(manifests.length, 7)
      for (const manifest of manifests) {
        assert.strictEqual(schemaErrors(manifest), "", `${manifest.source} ${manifest.kind}`)
      }
    })
  }

  it("finds a schema violation when a rendered object is wrong", () => {
    const deployment = one(render(), "Deployment")
    const broken = structuredClone(deployment)
    broken.spec.template.spec.containers[0].ports[0].containerPort = "smtp"
    assert.include(schemaErrors(broken), "containerPort")
  })

  it("renders the Helm pitfall of numbers as float64 the way Helm does", () => {
    // Values are JSON numbers (float64) in Helm: printed raw, 26214400 becomes 2.62144e+07. The
    // chart's envValue helper writes whole numbers as integers; this shows the renderer is faithful.
    const manifests = render({ valuesFiles: [valuesFile("config:\n  MAX_MESSAGE_SIZE: 26214400\n  CAPTURE_SAMPLE_RATE: 0.25\n")] })
    const data = one(manifests, "ConfigMap").data
    assert.strictEqual(data.MAX_MESSAGE_SIZE, "26214400")
    assert.strictEqual(data.CAPTURE_SAMPLE_RATE, "0.25")
  })

  it("probes liveness and readiness on /health/live and /health/ready", () => {
    const c = container(render())
    assert.strictEqual(c.livenessProbe.httpGet.path, "/health/live")
    assert.strictEqual(c.startupProbe.httpGet.path, "/health/live")
    assert.strictEqual(c.readinessProbe.httpGet.path, "/health/ready")
    assert.strictEqual(c.readinessProbe.httpGet.port, "http")
  })

  it("gives the pod more grace than the preStop pause plus SHUTDOWN_DRAIN_TIMEOUT", () => {
    for (const files of Object.values(valuesFiles)) {
      const manifests = render({ valuesFiles: files })
      const spec = one(manifests, "Deployment").spec.template.spec
      const drain = Number(/^(\d+) seconds$/.exec(one(manifests, "ConfigMap").data.SHUTDOWN_DRAIN_TIMEOUT)?.[1])
      const preStop = spec.containers[0].lifecycle.preStop.sleep.seconds
      assert.isAbove(preStop, 0)
      assert.isAbove(spec.terminationGracePeriodSeconds, preStop + drain)
    }
  })

  it("uses an exec preStop on clusters older than 1.30, which lack the sleep action", () => {
    const preStop = container(render({ kubeVersion: "1.28.4" })).lifecycle.preStop
    assert.isUndefined(preStop.sleep)
    assert.deepStrictEqual(preStop.exec.command, ["/nodejs/bin/node", "-e", "setTimeout(() => {}, 15000)"])
  })

  it("rolls out one new ready pod before stopping an old one", () => {
    const spec = one(render(), "Deployment").spec
    assert.deepStrictEqual(spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 })
  })

  it("runs non-root on a read-only root filesystem with every capability dropped", () => {
    const manifests = render()
    const pod = one(manifests, "Deployment").spec.template.spec
    const c = container(manifests)
    assert.strictEqual(pod.securityContext.runAsNonRoot, true)
    assert.notStrictEqual(pod.securityContext.runAsUser, 0)
    assert.isUndefined(pod.securityContext.sysctls)
    assert.strictEqual(c.securityContext.readOnlyRootFilesystem, true)
    assert.strictEqual(c.securityContext.allowPrivilegeEscalation, false)
    assert.deepStrictEqual(c.securityContext.capabilities, { drop: ["ALL"] })
    assert.deepStrictEqual(
      c.volumeMounts.map((m: { mountPath: string }) => m.mountPath).sort(),
      ["/data", "/etc/smtp-gateway/tls", "/tmp"]
    )
  })

  it("adds NET_BIND_SERVICE and the unprivileged-port sysctl only when the pod binds a port below 1024", () => {
    const manifests = render({ valuesFiles: [valuesFile("containerPorts:\n  smtp: 587\n  smtps: 465\nsmtps:\n  enabled: true\n")] })
    const pod = one(manifests, "Deployment").spec.template.spec
    assert.deepStrictEqual(pod.securityContext.sysctls, [{ name: "net.ipv4.ip_unprivileged_port_start", value: "465" }])
    assert.deepStrictEqual(container(manifests).securityContext.capabilities, { drop: ["ALL"], add: ["NET_BIND_SERVICE"] })
    assert.strictEqual(one(manifests, "ConfigMap").data.SMTP_PORT, "587")
  })

  it("exposes 587 on a LoadBalancer that keeps client addresses, and the admin port on a ClusterIP", () => {
    const manifests = render({ valuesFiles: valuesFiles.production })
    const smtp = one(manifests, "Service", "smtp-gateway").spec
    assert.strictEqual(smtp.type, "LoadBalancer")
    assert.strictEqual(smtp.externalTrafficPolicy, "Local")
    assert.deepStrictEqual(
      smtp.ports.map((p: { port: number; targetPort: string }) => [p.port, p.targetPort]),
      [[587, "smtp"], [465, "smtps"]]
    )
    const admin = one(manifests, "Service", "smtp-gateway-admin").spec
    assert.strictEqual(admin.type, "ClusterIP")
    assert.deepStrictEqual(admin.ports.map((p: { targetPort: string }) => p.targetPort), ["http"])
    const ports = container(manifests).ports.map((p: { name: string }) => p.name)
    assert.deepStrictEqual(ports, ["smtp", "smtps", "http"])
  })

  it("trusts PROXY headers only from the configured proxies", () => {
    const manifests = render({
      valuesFiles: [valuesFile(
        "service:\n  smtp:\n    externalTrafficPolicy: Cluster\n    proxyProtocol:\n      enabled: true\n      trustedProxies: [10.0.0.0/8, 192.168.0.0/16]\n"
      )]
    })
    assert.strictEqual(one(manifests, "ConfigMap").data.TRUSTED_PROXIES, "10.0.0.0/8,192.168.0.0/16")
    assert.include(
      renderError("service:\n  smtp:\n    proxyProtocol:\n      enabled: true\n"),
      "trustedProxies"
    )
  })

  it("reads settings from the ConfigMap and secrets from a Secret, never the other way round", () => {
    const manifests = render({
      valuesFiles: [valuesFile("secret:\n  env:\n    ADMIN_TOKEN: s3cret\n    AUTH_URL: ''\nredis:\n  url: redis://:pw@redis:6379/0\n")]
    })
    const secret = one(manifests, "Secret")
    assert.deepStrictEqual(secret.stringData, { ADMIN_TOKEN: "s3cret", REDIS_URL: "redis://:pw@redis:6379/0" })
    const data = one(manifests, "ConfigMap").data
    assert.isUndefined(data.ADMIN_TOKEN)
    assert.isUndefined(data.REDIS_URL)
    assert.deepStrictEqual(container(manifests).envFrom, [
      { configMapRef: { name: "smtp-gateway" } },
      { secretRef: { name: "smtp-gateway" } }
    ])
    assert.include(renderError("config:\n  ADMIN_TOKEN: x\n"), "config.ADMIN_TOKEN is set by the chart")
    assert.include(renderError("config:\n  SMTP_PORT: 25\n"), "containerPorts.smtp")
  })

  it("uses existing Secrets in production and creates none of its own", () => {
    const manifests = render({ valuesFiles: valuesFiles.production })
    assert.isEmpty(manifests.filter((m) => m.kind === "Secret"))
    const c = container(manifests)
    assert.deepStrictEqual(c.envFrom[1], { secretRef: { name: "smtp-gateway-env" } })
    assert.deepStrictEqual(c.env[0], {
      name: "REDIS_URL",
      valueFrom: { secretKeyRef: { name: "smtp-gateway-redis", key: "REDIS_URL" } }
    })
  })

  it("keeps redis.url in the chart's Secret beside an existing Secret for the rest", () => {
    const manifests = render({ valuesFiles: valuesFiles.staging })
    assert.deepStrictEqual(one(manifests, "Secret").stringData, { REDIS_URL: "redis://redis-master:6379/0" })
    assert.deepStrictEqual(container(manifests).envFrom.slice(1), [
      { secretRef: { name: "smtp-gateway-env" } },
      { secretRef: { name: "smtp-gateway" } }
    ])
  })

  it("only sets environment variables the gateway reads", () => {
    const config = readFileSync(join(import.meta.dirname, "../../src/Config.ts"), "utf8")
    const known = new Set(config.match(/"[A-Z][A-Z0-9_]+"/g)?.map((s) => s.slice(1, -1)))
    assert.isAbove(known.size, 30)
    for (const files of Object.values(valuesFiles)) {
      for (const key of Object.keys(one(render({ valuesFiles: files }), "ConfigMap").data)) {
        assert.isTrue(known.has(key), `${key} is not read by src/Config.ts`)
      }
    }
  })

  it("mounts the cert-manager certificate's Secret as a directory and points TLS_*_PATH into it", () => {
    const manifests = render({ valuesFiles: valuesFiles.production })
    const certificate = one(manifests, "Certificate")
    assert.deepStrictEqual(certificate.spec.dnsNames, ["smtp.example.com"])
    assert.strictEqual(certificate.spec.issuerRef.name, "letsencrypt-dns01")
    const pod = one(manifests, "Deployment").spec.template.spec
    const volume = pod.volumes.find((v: { name: string }) => v.name === "tls")
    assert.strictEqual(volume.secret.secretName, certificate.spec.secretName)
    const mount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === "tls")
    assert.isUndefined(mount.subPath, "a subPath mount never sees renewed certificates")
    const data = one(manifests, "ConfigMap").data
    assert.strictEqual(data.TLS_CERT_PATH, `${mount.mountPath}/tls.crt`)
    assert.strictEqual(data.TLS_KEY_PATH, `${mount.mountPath}/tls.key`)
    assert.strictEqual(data.SMTP_HOSTNAME, "smtp.example.com")
  })

  it("falls back to the gateway's self-signed certificate when TLS is disabled", () => {
    const manifests = render({ valuesFiles: [valuesFile("tls:\n  enabled: false\n")] })
    assert.isEmpty(manifests.filter((m) => m.kind === "Certificate"))
    assert.isUndefined(one(manifests, "ConfigMap").data.TLS_CERT_PATH)
  })

  it("autoscales on CPU and, in production, on messages per second, owning the replica count", () => {
    const manifests = render({ valuesFiles: valuesFiles.production })
    const hpa = one(manifests, "HorizontalPodAutoscaler").spec
    assert.deepStrictEqual(hpa.metrics.map((m: { type: string }) => m.type), ["Resource", "Pods"])
    assert.strictEqual(hpa.metrics[1].pods.metric.name, "smtp_emails_received_per_second")
    assert.isUndefined(one(manifests, "Deployment").spec.replicas)
    const fixed = render({ valuesFiles: [valuesFile("autoscaling:\n  enabled: false\nreplicaCount: 3\n")] })
    assert.isEmpty(fixed.filter((m) => m.kind === "HorizontalPodAutoscaler"))
    assert.strictEqual(one(fixed, "Deployment").spec.replicas, 3)
  })

  it("keeps pods available through voluntary disruptions", () => {
    assert.strictEqual(one(render({ valuesFiles: valuesFiles.production }), "PodDisruptionBudget").spec.minAvailable, 2)
    const staging = one(render({ valuesFiles: valuesFiles.staging }), "PodDisruptionBudget").spec
    assert.deepStrictEqual([staging.maxUnavailable, staging.minAvailable], [1, undefined])
  })

  it("scrapes /metrics through the admin Service", () => {
    const manifests = render({ valuesFiles: valuesFiles.production })
    const monitor = one(manifests, "ServiceMonitor").spec
    const admin = one(manifests, "Service", "smtp-gateway-admin")
    for (const [key, value] of Object.entries(monitor.selector.matchLabels)) {
      assert.strictEqual(admin.metadata.labels[key], value)
    }
    assert.deepStrictEqual(monitor.endpoints.map((e: { port: string; path: string }) => [e.port, e.path]), [["http", "/metrics"]])
    assert.notStrictEqual(one(manifests, "Service", "smtp-gateway").metadata.labels["app.kubernetes.io/component"], "admin")
  })

  it("lets the pod reach only DNS, the API over HTTPS and Redis", () => {
    const policy = one(render({ valuesFiles: valuesFiles.production }), "NetworkPolicy").spec
    assert.deepStrictEqual(policy.policyTypes, ["Ingress", "Egress"])
    const egressPorts = policy.egress.map((rule: { ports: Array<{ port: number }> }) => rule.ports.map((p) => p.port))
    assert.deepStrictEqual(egressPorts, [[53, 53], [443], [6379]])
    assert.include(policy.egress[1].to[0].ipBlock.except, "169.254.0.0/16")
    const noRedis = one(render(), "NetworkPolicy").spec
    assert.strictEqual(noRedis.egress.length, 2)
  })

  it("prints install notes that name the host and warn when Redis is missing", () => {
    const { notes } = renderChart({})
    assert.include(notes, "smtp.example.com")
    assert.include(notes, "no Redis is configured")
    assert.notInclude(renderChart({ valuesFiles: valuesFiles.production }).notes, "no Redis")
  })
})

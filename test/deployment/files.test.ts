// The deployment files that are not Helm templates: every YAML file parses (and passes yamllint
// and, for cert-manager, its schemas), flake.nix parses, and the Dockerfile, .dockerignore and
// docs keep the promises the deployment issue asks for. yamllint and nix-instantiate checks skip
// only when those tools are absent (Debian: yamllint, nix-bin).
import { assert, describe, it } from "@effect/vitest"
import { Predicate } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { parseFlake, parseYamlDocuments, plainYamlFiles, root, schemaErrors, yamllint } from "../../scripts/validate-deployment.ts"

const read = (path: string): string => readFileSync(join(root, path), "utf8")

describe("deployment YAML files", () => {
  const files = plainYamlFiles()

  it("include the chart's values, the cert-manager manifests and the compose file", () => {
    const names = files.map((file) => relative(root, file))
    for (const expected of [
      "deployment/helm/smtp-gateway/Chart.yaml",
      "deployment/helm/smtp-gateway/values.yaml",
      "deployment/helm/smtp-gateway/values-production.yaml",
      "deployment/helm/smtp-gateway/values-staging.yaml",
      "deployment/cert-manager/clusterissuer-letsencrypt-staging.yaml",
      "deployment/cert-manager/clusterissuer-letsencrypt-production.yaml",
      "deployment/cert-manager/clusterissuer-letsencrypt-dns01.yaml",
      "deployment/cert-manager/certificate.yaml",
      "deployment/docker/compose.yaml"
    ]) assert.include(names, expected)
    assert.isEmpty(names.filter((name) => name.includes("/templates/")))
  })

  for (const file of files) {
    it(`${relative(root, file)} parses as YAML without duplicate keys`, () => {
      const docs = parseYamlDocuments(readFileSync(file, "utf8"), file)
      assert.isNotEmpty(docs.filter(Predicate.isObject))
    })
  }

  it("rejects a duplicate key, so the parse above can fail", () => {
    assert.throws(() => parseYamlDocuments("a: 1\na: 2\n", "dup.yaml"), /dup\.yaml/)
  })

  it("has cert-manager issuers for Let's Encrypt staging, production and DNS-01 that pass their schemas", () => {
    const objects = files
      .filter((file) => file.includes("/cert-manager/"))
      .flatMap((file) => parseYamlDocuments(readFileSync(file, "utf8"), file).filter(Predicate.isObject))
    for (const object of objects) assert.strictEqual(schemaErrors(object), "")
    const issuers = objects.filter((o) => o.kind === "ClusterIssuer")
    const servers = issuers.map((o) => JSON.stringify(o.spec))
    assert.isTrue(servers.some((s) => s.includes("acme-staging-v02")))
    assert.isTrue(servers.some((s) => s.includes("acme-v02") && s.includes("http01")))
    assert.isTrue(servers.some((s) => s.includes("dns01")))
    const certificate = objects.find((o) => o.kind === "Certificate")
    assert.deepStrictEqual((certificate?.spec as { dnsNames: Array<string> }).dnsNames, ["smtp.example.com"])
  })

  const lint = yamllint(files)
  it.skipIf(lint === undefined)(
    lint === undefined ? "pass yamllint (skipped: yamllint is not installed; apt-get install yamllint)" : "pass yamllint",
    () => assert.strictEqual(lint, "")
  )
})

describe("flake.nix", () => {
  const parsed = parseFlake()
  it.skipIf(parsed === undefined)(
    parsed === undefined
      ? "parses with nix-instantiate (skipped: nix-instantiate is not installed; apt-get install nix-bin)"
      : "parses with nix-instantiate",
    () => assert.strictEqual(parsed, "")
  )

  it("builds with buildNpmPackage on Node 22 and offers a dev shell and an app", () => {
    const flake = read("flake.nix")
    for (const part of ["buildNpmPackage", "nodejs_22", "npmDepsHash", "devShells", "apps", "pkgs.redis", "pkgs.swaks"]) {
      assert.include(flake, part)
    }
  })
})

describe("container image", () => {
  const dockerfile = read("deployment/docker/Dockerfile")
  const stages = [...dockerfile.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gm)]

  it("is built in stages and runs on a Node 22 runtime without a shell", () => {
    assert.isAtLeast(stages.length, 3)
    assert.match(dockerfile, /ARG RUNTIME_IMAGE=gcr\.io\/distroless\/nodejs22-debian12:nonroot/)
    assert.match(dockerfile, /ARG NODE_IMAGE=node:22-/)
    assert.strictEqual(stages.at(-1)?.[1], "${RUNTIME_IMAGE}")
  })

  it("ships only runtime dependencies and the compiled code", () => {
    assert.match(dockerfile, /npm ci --omit=dev/)
    assert.match(dockerfile, /COPY --from=deps \/app\/node_modules/)
    assert.match(dockerfile, /COPY --from=build \/app\/dist/)
    assert.notMatch(dockerfile, /^COPY \. /m)
  })

  it("runs as a non-root user with DATA_DIR on a volume and an unprivileged SMTP port", () => {
    const user = /^USER\s+(\d+)(?::(\d+))?/m.exec(dockerfile)
    assert.isNotNull(user)
    assert.notStrictEqual(user?.[1], "0")
    assert.match(dockerfile, /DATA_DIR=\/data/)
    assert.match(dockerfile, /VOLUME \["\/data"\]/)
    const port = Number(/^\s+SMTP_PORT=(\d+)/m.exec(dockerfile)?.[1])
    assert.isAtLeast(port, 1024)
  })

  it("limits glibc's malloc arenas to 2", () => {
    assert.match(dockerfile, /^\s+MALLOC_ARENA_MAX=2$/m)
  })

  it("checks its health on /health/live and is stopped by SIGTERM", () => {
    assert.match(dockerfile, /HEALTHCHECK[^\n]*\\\n[^\n]*\/health\/live/)
    assert.match(dockerfile, /STOPSIGNAL SIGTERM/)
    assert.match(dockerfile, /ENTRYPOINT \["\/nodejs\/bin\/node", "bin\/smtp-gateway\.js"\]/)
    assert.match(dockerfile, /CMD \["serve"\]/)
  })

  it("copies only files that exist and that .dockerignore keeps in the build context", () => {
    const ignored = read(".dockerignore").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
    for (const must of ["node_modules", "dist", ".git", "data", ".env"]) assert.include(ignored, must)
    const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/))
    assert.isNotEmpty(copied)
    for (const path of copied) {
      assert.isTrue(existsSync(join(root, path)), `${path} is copied but does not exist`)
      assert.notInclude(ignored, path, `${path} is copied but ignored by .dockerignore`)
    }
  })
})

describe("docs/deployment.md", () => {
  const doc = read("docs/deployment.md")

  it("walks from an empty cluster to a rolling update", () => {
    for (const step of ["cert-manager", "helm upgrade --install", "DNS", "swaks", "Scaling", "Rolling update", "Secret"]) {
      assert.include(doc, step)
    }
  })

  it("names only repository files that exist", () => {
    const paths = [...doc.matchAll(/`((?:deployment|scripts|docs)\/[^`\s]+|flake\.nix|\.dockerignore)`/g)].map((m) => m[1]!)
    assert.isNotEmpty(paths)
    for (const path of paths) assert.isTrue(existsSync(join(root, path)), `${path} does not exist`)
  })
})

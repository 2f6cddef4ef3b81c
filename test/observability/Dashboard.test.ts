import * as fs from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Metric } from "effect"
import * as Metrics from "../../src/observability/Metrics.ts"

const dashboardPath = path.resolve(import.meta.dirname, "../../deployment/grafana/smtp-gateway.json")

interface Panel {
  readonly id: number
  readonly type: string
  readonly title: string
  readonly targets?: ReadonlyArray<{ readonly expr: string }>
}

const dashboard = JSON.parse(fs.readFileSync(dashboardPath, "utf8")) as {
  readonly uid: string
  readonly panels: ReadonlyArray<Panel>
  readonly templating: { readonly list: ReadonlyArray<{ readonly name: string }> }
}
const defined = new Set(Object.values(Metrics).filter(Metric.isMetric).map((metric) => metric.id))
const exprs = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr))
/** Metric names a query reads, without the histogram series suffixes. */
const referenced = new Set(exprs.flatMap((expr) => Array.from(expr.matchAll(/\b(smtp_[a-z_]+)\{/g), (m) => m[1]!)).map((name) =>
  name.replace(/_(bucket|sum|count)$/, "")
))

describe("Grafana dashboard", () => {
  it("queries only metrics the gateway defines, each filtered by the job variable", () => {
    assert.isAbove(referenced.size, 0)
    for (const name of referenced) assert.isTrue(defined.has(name), `${name} is defined in Metrics.ts`)
    for (const expr of exprs) {
      for (const selector of expr.matchAll(/\bsmtp_[a-z_]+\{([^}]*)\}/g)) assert.include(selector[1], `job=~"$job"`, expr)
    }
    assert.deepStrictEqual(dashboard.templating.list.map((v) => v.name), ["datasource", "job"])
  })

  it("charts every metric the gateway defines", () => {
    for (const name of defined) assert.isTrue(referenced.has(name), `a panel shows ${name}`)
  })

  it("gives each panel its own id and a title", () => {
    const ids = dashboard.panels.map((panel) => panel.id)
    assert.strictEqual(new Set(ids).size, ids.length)
    for (const panel of dashboard.panels) assert.match(panel.title, /\S/)
    assert.strictEqual(dashboard.uid, "smtp-gateway")
  })
})

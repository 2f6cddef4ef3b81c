/**
 * Reads a V8 .cpuprofile (from `node --cpu-prof`) and summarises where the time went: the functions
 * with the most self time, and self time grouped by file or package. Text only; no judgement.
 */
interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
export interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
  readonly startTime: number
  readonly endTime: number
}

/** Where a frame's code lives: `src/…` or `dist/…` of this repo, `pkg:<name>` for node_modules, `node:…`, or a V8 tag. */
const areaOf = (url: string, repo: string): string => {
  if (url === "") return "(v8/native)"
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (pkg) return `pkg:${pkg[1]}`
  const local = url.replace(/^file:\/\//, "")
  if (local.startsWith(repo)) return local.slice(repo.length + 1)
  return url
}

export const summarizeProfile = (profile: CpuProfile, repo: string, top = 30): string => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const idle = [...self.entries()].filter(([id]) => byId.get(id)?.callFrame.functionName === "(idle)").reduce((a, [, t]) => a + t, 0)
  const busy = total - idle
  const functions = new Map<string, number>()
  const areas = new Map<string, number>()
  for (const [id, t] of self) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined || frame.functionName === "(idle)") continue
    const area = areaOf(frame.url, repo)
    const key = `${frame.functionName || "(anonymous)"}  ${area}:${frame.lineNumber + 1}`
    functions.set(key, (functions.get(key) ?? 0) + t)
    areas.set(area, (areas.get(area) ?? 0) + t)
  }
  // who calls the native functions: each native sample charged to its nearest caller with a URL
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const nativeCallers = new Map<string, number>()
  // inclusive time of this repository's own functions (dist/ or src/), each counted once per sample
  const inclusive = new Map<string, number>()
  for (const [id, t] of self) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined || frame.functionName === "(idle)" || frame.functionName === "(garbage collector)" || frame.functionName === "(program)") continue
    const seen = new Set<string>()
    let callerCharged = frame.url !== ""
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at)?.callFrame
      if (f === undefined) break
      const area = areaOf(f.url, repo)
      if (!callerCharged && f.url !== "") {
        const key = `${frame.functionName} ← ${f.functionName || "(anonymous)"}  ${area}:${f.lineNumber + 1}`
        nativeCallers.set(key, (nativeCallers.get(key) ?? 0) + t)
        callerCharged = true
      }
      if (area.startsWith("dist/") || area.startsWith("src/")) {
        const key = `${f.functionName || "(anonymous)"}  ${area}:${f.lineNumber + 1}`
        if (!seen.has(key)) {
          seen.add(key)
          inclusive.set(key, (inclusive.get(key) ?? 0) + t)
        }
      }
    }
  }
  const pct = (t: number) => `${((100 * t) / busy).toFixed(1).padStart(5)}%`
  const ms = (t: number) => `${(t / 1000).toFixed(0).padStart(7)} ms`
  const lines = [
    `busy ${(busy / 1e6).toFixed(2)} s of ${(total / 1e6).toFixed(2)} s sampled (idle ${(idle / 1e6).toFixed(2)} s); shares are of busy time`,
    "",
    `top ${top} functions by self time:`,
    ...[...functions.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, t]) => `${pct(t)} ${ms(t)}  ${k}`),
    "",
    "self time by file / package:",
    ...[...areas.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, t]) => `${pct(t)} ${ms(t)}  ${k}`),
    "",
    "native self time by nearest JavaScript caller:",
    ...[...nativeCallers.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, t]) => `${pct(t)} ${ms(t)}  ${k}`),
    "",
    "inclusive time of the gateway's own functions (dist/):",
    ...[...inclusive.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, t]) => `${pct(t)} ${ms(t)}  ${k}`)
  ]
  return lines.join("\n")
}

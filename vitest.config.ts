import { defineConfig } from "vitest/config"

// Node 20 lacks Map.groupBy (Node 21+); vitest 5's reporters call it when printing failures,
// and without it a failing run loses its summary. Node 22+ has it and skips this.
if (typeof (Map as unknown as { groupBy?: unknown }).groupBy !== "function") {
  Object.defineProperty(Map, "groupBy", {
    value: <K, V>(items: Iterable<V>, key: (v: V, i: number) => K) => {
      const groups = new Map<K, Array<V>>()
      let i = 0
      for (const item of items) {
        const k = key(item, i++)
        const group = groups.get(k)
        if (group) group.push(item)
        else groups.set(k, [item])
      }
      return groups
    },
    configurable: true,
    writable: true
  })
}

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})

/**
 * Maps kept in memory with a bound, oldest first out: the duplicate window, the limit stores and the
 * Cakemail refresh grants. A Map in insertion order is the age order; this module only keeps it so
 * and makes room. It knows nothing of what the entries mean.
 */

/**
 * Sets `key` as the newest entry of a map that holds at most `capacity`. When the map is full, entries
 * `expired` names go first, then the oldest, until a 64th of it is free: a Map keeps a deleted entry's
 * slot until its table is rebuilt and every walk from its start steps over those slots, so evicting one
 * entry per write walked ever more of them (~40 µs a message for a full duplicate window, 1.2 ms an AUTH
 * failure for a full lockout store). In batches, a walk comes once per `capacity / 64` new keys.
 */
export const setNewest = <K, V>(
  map: Map<K, V>,
  key: K,
  value: V,
  capacity: number,
  expired?: (value: V) => boolean
): void => {
  // a Map keeps a key's first place when it is set again
  map.delete(key)
  if (map.size >= capacity) {
    if (expired !== undefined) for (const [k, v] of map) if (expired(v)) map.delete(k)
    const target = capacity - Math.max(1, Math.floor(capacity / 64))
    for (const oldest of map.keys()) {
      if (map.size <= target) break
      map.delete(oldest)
    }
  }
  map.set(key, value)
}

/** Reconnect delays: base * 2^attempt, capped, with up to `jitter` of it random (attempt from 0). */
export function backoffDelay(attempt: number, random: () => number = Math.random,
                             baseMs = 500, maxMs = 15000, jitter = 0.2): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.round(raw * (1 - jitter + jitter * random()));
}

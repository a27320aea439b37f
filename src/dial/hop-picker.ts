import type { Hop, Upstream } from "../config/routes.js";

/**
 * Chooses which member of a hop to try: in order (failover) or in turn (round-robin), with
 * members that failed recently moved to the back until their `retryAfter` has passed. They are
 * moved, not dropped, so an outage of every member still gets tried rather than refused outright.
 * One picker lives in a server context; failures are remembered per upstream name.
 */
export class HopPicker {
  private readonly downUntil = new Map<string, number>();
  private readonly turns = new WeakMap<Hop, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** The hop's members in the order to try them for one connection. */
  candidates(hop: Hop): Upstream[] {
    let order = hop.members;
    if (hop.mode === "round-robin" && order.length > 1) {
      const turn = this.turns.get(hop) ?? 0;
      this.turns.set(hop, turn + 1);
      const k = turn % order.length;
      order = [...order.slice(k), ...order.slice(0, k)];
    }
    const now = this.now();
    const healthy = order.filter((u) => !this.isDown(u, now));
    const down = order.filter((u) => this.isDown(u, now));
    return [...healthy, ...down];
  }

  failed(upstream: Upstream, hop: Hop): void {
    this.downUntil.set(upstream.name, this.now() + hop.retryAfterMs);
  }

  succeeded(upstream: Upstream): void {
    this.downUntil.delete(upstream.name);
  }

  isDown(upstream: Upstream, now = this.now()): boolean {
    return (this.downUntil.get(upstream.name) ?? 0) > now;
  }
}

/** Counts live resources (sessions, UDP associations) per client address, to enforce a per-client bound. */
export class ClientCounter {
  private readonly counts = new Map<string, number>();

  /** Takes one slot for `client` unless it already holds `limit`; returns a release function. */
  acquire(client: string, limit: number): (() => void) | undefined {
    const held = this.counts.get(client) ?? 0;
    if (held >= limit) return undefined;
    this.counts.set(client, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(client) ?? 1) - 1;
      if (left <= 0) this.counts.delete(client);
      else this.counts.set(client, left);
    };
  }

  held(client: string): number {
    return this.counts.get(client) ?? 0;
  }
}

type Lookup = (host: string) => Promise<string[]>;

interface Entry {
  expires: number;
  addresses?: string[];
  error?: Error;
}

/**
 * A small name cache for one UDP association: a client sending a stream of datagrams to one name
 * costs one lookup, not one per datagram. Failures are remembered briefly too, so a client cannot
 * turn bad names into a lookup flood. Bounded in entries; the oldest goes first.
 */
export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<string[]>>();

  constructor(
    private readonly maxEntries = 64,
    private readonly ttlMs = 60_000,
    private readonly failureTtlMs = 10_000,
    private readonly resolve: Lookup,
  ) {}

  async lookup(host: string): Promise<string[]> {
    const key = host.toLowerCase();
    const hit = this.entries.get(key);
    if (hit && hit.expires > Date.now()) {
      if (hit.error) throw hit.error;
      return hit.addresses!;
    }
    this.entries.delete(key);
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    const p = this.resolve(host).then(
      (addresses) => {
        this.store(key, { expires: Date.now() + this.ttlMs, addresses });
        return addresses;
      },
      (error: Error) => {
        this.store(key, { expires: Date.now() + this.failureTtlMs, error });
        throw error;
      },
    );
    this.inFlight.set(key, p);
    try {
      return await p;
    } finally {
      this.inFlight.delete(key);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  private store(key: string, entry: Entry): void {
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, entry);
  }
}

import http from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { Transform } from "node:stream";
import type { Dialed } from "../../dial/dialer.js";
import type { TokenBucket } from "../limits.js";
import type { Tally } from "../relay.js";

/** What a forwarded request hands the agent: the pool key and how to dial when nothing is pooled. */
export interface UpstreamOptions extends http.RequestOptions {
  ferryKey: string;
  ferryDial: () => Promise<Dialed>;
}

/** Where each upstream connection goes, for the records of the requests it carries. */
export const dialedOf = new WeakMap<Duplex, Dialed>();

/**
 * Keeps one client connection's connections to its targets open between its requests. Pooled
 * by a key of the target and the rule that admitted it, so a connection is reused only for a
 * request decided the same way; every request is still decided. New connections come from the
 * outbound path (the admitting rule's route), never from the agent itself. One agent per client
 * connection: nothing is shared between clients or users.
 */
export class TargetAgent extends http.Agent {
  constructor(idleMs: number) {
    super({ keepAlive: true, maxFreeSockets: 4, scheduling: "lifo", ...(idleMs > 0 && { timeout: idleMs }) });
  }

  override getName(options?: http.ClientRequestArgs): string {
    return (options as UpstreamOptions).ferryKey;
  }

  override createConnection(
    options: http.ClientRequestArgs,
    done: (err: Error | null, stream?: Duplex) => void,
  ): undefined {
    (options as UpstreamOptions).ferryDial().then((dialed) => {
      dialedOf.set(dialed.stream, dialed);
      done(null, dialed.stream);
    }, done);
    return undefined;
  }

  // A route's stream need not be a socket (keep-alive probes and ref/unref are a socket's).
  override keepSocketAlive(socket: net.Socket): boolean {
    // Node's returns whether the socket may be kept (its typings say void).
    if (socket instanceof net.Socket) return (super.keepSocketAlive(socket) as unknown as boolean) !== false;
    return true;
  }

  override reuseSocket(socket: net.Socket, req: http.ClientRequest): void {
    if (socket instanceof net.Socket) super.reuseSocket(socket, req);
  }
}

/**
 * Passes a body through, counting it into `tally` and resting while a bandwidth bucket is in
 * debt (the same buckets a relay draws from), so a forwarded request is limited like a tunnel.
 */
export function metered(tally: Tally, key: keyof Tally, buckets?: TokenBucket[]): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      tally[key] += chunk.length;
      let wait = 0;
      for (const b of buckets ?? []) wait = Math.max(wait, b.take(chunk.length));
      if (wait > 0) setTimeout(callback, Math.ceil(wait), null, chunk);
      else callback(null, chunk);
    },
  });
}

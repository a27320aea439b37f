import type net from "node:net";
import type { Duplex } from "node:stream";
import type { BindResult } from "../client/bind.js";
import type { Config } from "../config/schema.js";
import { normalizeIp } from "../policy/addresses.js";
import type { Decision, Policy, RequestQuery } from "../policy/policy.js";
import { isUnspecified } from "../protocol/address.js";
import { Reply } from "../protocol/errors.js";
import { listenTcp, placement } from "./announce.js";
import type { ChainDialer } from "./chain.js";
import { DialError } from "./errors.js";

/** A BIND listening for its one peer, wherever the listener is. */
export interface Listening {
  /** Where the peer must connect: what the first reply announces. */
  announced: { host: string; port: number };
  /** The admitted peer. Rejects with a DialError when the route gives up or its peer is refused. */
  accepted: Promise<{ stream: Duplex; peer: { host: string; port: number } }>;
  /** Stops waiting for a peer; after one was accepted, its stream is the caller's to close. */
  close(): void;
}

export interface BindOptions {
  /**
   * Every peer that connected, with its decision; none when it was not the peer the request
   * named. For the session's decision events and its count of peers turned away.
   */
  onPeer: (ip: string, decision: Decision | undefined) => void;
}

/** A peer is decided like any destination: its address, under the request's name and port. */
function decidePeer(policy: Policy, q: RequestQuery, ip: string, options: BindOptions): boolean {
  const decision = policy.destination(q, ip);
  options.onPeer(ip, decision);
  return decision.verdict === "allow";
}

/**
 * BIND here: listen where the client reached us (or on the external address), accept only a
 * peer from the addresses the request named that policy admits, turn any other away and keep
 * waiting. `expected` undefined means any peer (the request named all zeros).
 */
export async function listenDirect(
  policy: Policy,
  q: RequestQuery,
  config: Config,
  controlLocal: string,
  expected: Set<string> | undefined,
  options: BindOptions,
): Promise<Listening> {
  const { listenHost, announceHost } = placement(config, controlLocal);
  let server: net.Server;
  try {
    server = await listenTcp(listenHost, config.relayPorts);
  } catch (err) {
    throw new DialError(
      `cannot open a BIND listener on ${listenHost}: ${(err as Error).message}`,
      Reply.GENERAL_FAILURE,
    );
  }
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<{ stream: Duplex; peer: { host: string; port: number } }>((resolve) => {
    server.on("connection", (peer: net.Socket) => {
      peer.on("error", () => {});
      const ip = normalizeIp(peer.remoteAddress ?? "");
      const wanted = !expected || expected.has(ip);
      if (!server.listening || !wanted || !decidePeer(policy, q, ip, options)) {
        // Not the peer the client named: turn it away and keep waiting for the right one.
        if (!wanted) options.onPeer(ip, undefined);
        peer.destroy();
        return;
      }
      server.close();
      resolve({ stream: peer, peer: { host: peer.remoteAddress ?? "0.0.0.0", port: peer.remotePort ?? 0 } });
    });
  });
  return { announced: { host: announceHost, port }, accepted, close: () => server.close() };
}

/**
 * BIND on the route's last hop: its listener is announced, and the peer it reports in its second
 * reply is decided here before a byte is relayed. An upstream accepts one peer only, so a refused
 * peer ends the BIND (reply 0x02).
 */
export async function listenUpstream(
  policy: Policy,
  q: RequestQuery,
  route: ChainDialer,
  options: BindOptions & { signal?: AbortSignal; timeoutMs?: number },
): Promise<Listening> {
  let listening: BindResult;
  try {
    listening = await route.bind(q.target, options);
  } catch (err) {
    throw route.failure(err);
  }
  const accepted = listening.accepted.then(
    ({ socket, peer }) => {
      const ip = normalizeIp(peer.host);
      if (isUnspecified(peer) || !decidePeer(policy, q, ip, options)) {
        socket.destroy();
        throw new DialError(
          `the peer ${ip} that connected to the upstream's BIND listener is not allowed`,
          Reply.NOT_ALLOWED,
        );
      }
      return { stream: socket as Duplex, peer: { host: peer.host, port: peer.port } };
    },
    (err) => {
      throw route.failure(err);
    },
  );
  // Whoever stops waiting first (timeout, client gone) must not leave an unhandled rejection.
  accepted.catch(() => {});
  return {
    announced: { host: listening.address, port: listening.port },
    accepted,
    close: () => listening.close(),
  };
}

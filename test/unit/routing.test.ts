import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import type { Dialer } from "../../src/dial/dialer.js";
import { DialError } from "../../src/dial/errors.js";
import { RoutingDialer } from "../../src/dial/routing.js";
import { addressOf } from "../../src/protocol/address.js";
import { Reply } from "../../src/protocol/errors.js";

const tagged = (tag: string, seen: string[]): Dialer => ({
  dial: async (target, options) => {
    seen.push(`${tag} ${target.host} ${options?.resolve ?? "-"}`);
    return {
      stream: new PassThrough(),
      local: { host: tag, port: 1 },
      remote: { host: target.host, port: 1 },
    };
  },
});

test("the routing dialer sends each dial to the route the rule named, direct by default", async () => {
  const seen: string[] = [];
  const d = new RoutingDialer(tagged("direct", seen), new Map([["outside", tagged("outside", seen)]]));
  const t = addressOf("example.com", 80);
  assert.equal((await d.dial(t)).local.host, "direct");
  assert.equal((await d.dial(t, { via: "direct", resolve: "ipv6-only" })).local.host, "direct");
  assert.equal((await d.dial(t, { via: "outside" })).local.host, "outside");
  assert.deepEqual(seen, ["direct example.com -", "direct example.com ipv6-only", "outside example.com -"]);
  await assert.rejects(
    d.dial(t, { via: "nowhere" }),
    (e: Error) =>
      e instanceof DialError &&
      e.reply === Reply.GENERAL_FAILURE &&
      /no upstream or chain named nowhere/.test(e.message),
  );
});

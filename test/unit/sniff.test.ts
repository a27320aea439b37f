import assert from "node:assert/strict";
import { test } from "node:test";
import { sniffProtocol } from "../../src/protocol/sniff.js";

test("sniff tells SOCKS4, SOCKS5, HTTP and other protocols apart from the first bytes", () => {
  assert.deepEqual(sniffProtocol(Buffer.from([5, 1, 0])), { kind: "socks5" });
  assert.deepEqual(sniffProtocol(Buffer.from([4, 1])), { kind: "socks4" });
  assert.deepEqual(sniffProtocol(Buffer.from("GET / HTTP/1.1\r\n")), { kind: "http", method: "GET" });
  assert.deepEqual(sniffProtocol(Buffer.from("CONNECT example.com:443 HTTP/1.1")), {
    kind: "http",
    method: "CONNECT",
  });
  assert.equal(sniffProtocol(Buffer.from("GE")), undefined, "a prefix of a method needs more bytes");
  assert.equal(sniffProtocol(Buffer.alloc(0)), undefined);
  assert.deepEqual(sniffProtocol(Buffer.from([0x16, 3, 1])), { kind: "unknown", first: 0x16 });
  assert.deepEqual(sniffProtocol(Buffer.from("GEX")), { kind: "unknown", first: 0x47 });
});

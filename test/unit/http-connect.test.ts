import assert from "node:assert/strict";
import { test } from "node:test";
import { addressOf } from "../../src/protocol/address.js";
import { ProtocolError, Reply } from "../../src/protocol/errors.js";
import {
  encodeHttpConnect,
  parseHttpConnectResponse,
  replyForHttpStatus,
} from "../../src/protocol/http-connect.js";

test("CONNECT request: authority with brackets for IPv6, Basic credentials", () => {
  assert.equal(
    encodeHttpConnect(addressOf("example.com", 443)).toString("latin1"),
    "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
  );
  assert.equal(
    encodeHttpConnect(addressOf("::1", 8080), { user: "svc", password: "pä ss" }).toString("latin1"),
    `CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\nProxy-Authorization: Basic ${Buffer.from("svc:pä ss").toString("base64")}\r\n\r\n`,
  );
  assert.throws(() => encodeHttpConnect(addressOf("a b", 1)), RangeError);
  assert.throws(
    () => encodeHttpConnect(addressOf("h", 1), { user: "a:b", password: "" }),
    /cannot contain ':'/,
  );
});

test("response head: status, reason, headers; tunnel bytes after the blank line are not consumed", () => {
  const head = "HTTP/1.1 200 Connection established\r\nVia: 1.1 squid\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
  const buf = Buffer.concat([Buffer.from(head, "latin1"), Buffer.from("SSH-2.0-tunnel")]);
  const parsed = parseHttpConnectResponse(buf);
  assert.ok(parsed);
  assert.equal(parsed.consumed, head.length);
  assert.equal(parsed.value.status, 200);
  assert.equal(parsed.value.version, "1.1");
  assert.equal(parsed.value.reason, "Connection established");
  assert.equal(parsed.value.headers.get("via"), "1.1 squid");
  assert.equal(parsed.value.headers.get("x-a"), "1, 2", "repeated headers are joined");
  // Every strict prefix needs more bytes.
  for (let i = 0; i < head.length; i++) {
    assert.equal(parseHttpConnectResponse(buf.subarray(0, i)), undefined, `prefix ${i}`);
  }
  const lfHead = "HTTP/1.0 407 Proxy Authentication Required\nA: b\n\n";
  const lf = parseHttpConnectResponse(Buffer.from(`${lfHead}rest`));
  assert.deepEqual([lf?.value.status, lf?.value.headers.get("a"), lf?.consumed], [407, "b", lfHead.length]);
  const noReason = parseHttpConnectResponse(Buffer.from("HTTP/1.1 200\r\n\r\n"));
  assert.deepEqual([noReason?.value.status, noReason?.value.reason], [200, ""]);
});

test("garbage is refused early with a ProtocolError, not waited on", () => {
  const bad = (s: string, re: RegExp) =>
    assert.throws(
      () => parseHttpConnectResponse(Buffer.from(s, "latin1")),
      (e: Error) => e instanceof ProtocolError && e.reply === Reply.GENERAL_FAILURE && re.test(e.message),
    );
  bad("\x05\x00", /not an HTTP response/);
  bad("HTTX", /not an HTTP response/);
  bad("HTTP/2 200 OK\r\n\r\n", /malformed HTTP status line/);
  bad("HTTP/1.1 20 OK\r\n\r\n", /malformed HTTP status line/);
  bad("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", /malformed HTTP header line/);
  bad(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(17000)}`, /exceeds/);
});

test("HTTP status to SOCKS reply", () => {
  assert.equal(replyForHttpStatus(407), Reply.NOT_ALLOWED);
  assert.equal(replyForHttpStatus(403), Reply.NOT_ALLOWED);
  assert.equal(replyForHttpStatus(401), Reply.NOT_ALLOWED, "tinyproxy answers wrong credentials with 401");
  assert.equal(replyForHttpStatus(502), Reply.HOST_UNREACHABLE);
  assert.equal(replyForHttpStatus(504), Reply.TTL_EXPIRED);
  assert.equal(replyForHttpStatus(500), Reply.GENERAL_FAILURE);
});

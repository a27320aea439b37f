import assert from "node:assert/strict";
import { test } from "node:test";
import {
  appendVia,
  endToEndHeaders,
  HttpRequestError,
  parseAuthority,
  parseBasicCredentials,
  parseProxyTarget,
} from "../../src/protocol/http-proxy.js";

const status = (fn: () => unknown): number => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof HttpRequestError, String(err));
    return err.status;
  }
  assert.fail("no error");
};

test("CONNECT authorities: names, IPv4, bracketed IPv6; the port is required", () => {
  assert.deepEqual(parseAuthority("Example.COM:443"), { type: "domain", host: "example.com", port: 443 });
  assert.deepEqual(parseAuthority("127.0.0.1:8080"), { type: "ipv4", host: "127.0.0.1", port: 8080 });
  assert.deepEqual(parseAuthority("[::1]:22"), { type: "ipv6", host: "::1", port: 22 });
  for (const bad of [
    "example.com",
    "example.com:",
    "example.com:0",
    "example.com:65536",
    "::1:22",
    "[::1",
    "a b:1",
    "0x7f.1:80",
    "x%00:1",
  ])
    assert.equal(
      status(() => parseAuthority(bad)),
      400,
      bad,
    );
});

test("absolute URIs: host, default port 80, origin-form path; other forms refused with 400", () => {
  assert.deepEqual(parseProxyTarget("GET", "http://Host.example/a/b?c=d#frag"), {
    kind: "forward",
    target: { type: "domain", host: "host.example", port: 80 },
    path: "/a/b?c=d",
  });
  assert.deepEqual(parseProxyTarget("GET", "http://[::1]:8080"), {
    kind: "forward",
    target: { type: "ipv6", host: "::1", port: 8080 },
    path: "/",
  });
  const query = parseProxyTarget("GET", "http://h?x");
  assert.equal(query.kind === "forward" ? query.path : undefined, "/?x");
  assert.equal(parseProxyTarget("CONNECT", "h:443").kind, "connect");
  for (const bad of ["/path", "https://h/", "ftp://h/", "http://user:pw@h/", "http:///x"])
    assert.equal(
      status(() => parseProxyTarget("GET", bad)),
      400,
      bad,
    );
});

test("hop-by-hop headers go: the fixed list, Proxy-*, and what Connection names", () => {
  const raw = [
    "Host",
    "h",
    "Connection",
    "keep-alive, X-Hop",
    "X-Hop",
    "1",
    "Keep-Alive",
    "5",
    "TE",
    "trailers",
    "Trailer",
    "X",
    "Transfer-Encoding",
    "chunked",
    "Upgrade",
    "ws",
    "Proxy-Authorization",
    "x",
    "Proxy-Connection",
    "keep-alive",
    "X-Kept",
    "2",
    "x-kept",
    "3",
  ];
  assert.deepEqual(endToEndHeaders(raw, ["host"]), ["X-Kept", "2", "x-kept", "3"]);
  assert.equal(appendVia(["1.0 a", "1.1 b"], "1.1"), "1.0 a, 1.1 b, 1.1 ferry");
  assert.equal(appendVia([], "1.0"), "1.0 ferry");
});

test("Basic credentials: decoded, with a colon in the password; anything else is a 407", () => {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  assert.equal(parseBasicCredentials(undefined), undefined);
  assert.deepEqual(parseBasicCredentials(`Basic ${b64("alice:pa:ss")}`), {
    user: "alice",
    password: "pa:ss",
  });
  assert.deepEqual(parseBasicCredentials(`basic   ${b64("bob:")}`), { user: "bob", password: "" });
  for (const bad of ["Basic", "Basic !!!", `Basic ${b64("nocolon")}`, "Digest x=y", "Bearer abc", ""])
    assert.equal(
      status(() => parseBasicCredentials(bad)),
      407,
      bad,
    );
});

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Reply } from "../../src/protocol/errors.js";
import {
  encodeUdpDatagram,
  encodeUdpHeader,
  fragmentPosition,
  parseUdpDatagram,
} from "../../src/protocol/udp.js";
import { assertProtocolError, hex } from "../helpers/codec.js";

describe("SOCKS5 UDP header", () => {
  test("IPv4, IPv6 and domain headers encode and parse to the byte", () => {
    const v4 = hex("0000 00 01 7f000001 0035 68656c6c6f");
    assert.deepEqual(
      encodeUdpDatagram({
        frag: 0,
        address: { type: "ipv4", host: "127.0.0.1", port: 53 },
        data: Buffer.from("hello"),
      }),
      v4,
    );
    assert.deepEqual(parseUdpDatagram(v4), {
      frag: 0,
      address: { type: "ipv4", host: "127.0.0.1", port: 53 },
      data: Buffer.from("hello"),
    });
    const v6 = hex("0000 00 04 00000000000000000000000000000001 1388");
    assert.deepEqual(encodeUdpHeader({ type: "ipv6", host: "::1", port: 5000 }), v6);
    assert.deepEqual(parseUdpDatagram(v6), {
      frag: 0,
      address: { type: "ipv6", host: "::1", port: 5000 },
      data: Buffer.alloc(0),
    });
    const name = hex("0000 81 03 0b 6578616d706c652e636f6d 01bb ff");
    assert.deepEqual(
      encodeUdpHeader({ type: "domain", host: "example.com", port: 443 }, 0x81),
      name.subarray(0, -1),
    );
    const parsed = parseUdpDatagram(name);
    assert.equal(parsed.frag, 0x81);
    assert.deepEqual(fragmentPosition(parsed.frag), { position: 1, last: true });
    assert.deepEqual(parsed.data, hex("ff"));
  });

  test("a datagram is whole: every truncated header is an error, not 'need more'", () => {
    const whole = hex("0000 00 01 7f000001 0035");
    for (let n = 0; n < whole.length; n++) {
      assertProtocolError(() => parseUdpDatagram(whole.subarray(0, n)), undefined);
    }
    assert.deepEqual(parseUdpDatagram(whole).data, Buffer.alloc(0));
  });

  test("non-zero RSV and unknown ATYP are refused", () => {
    assertProtocolError(() => parseUdpDatagram(hex("0100 00 01 7f000001 0035")), undefined, /reserved/);
    assertProtocolError(() => parseUdpDatagram(hex("0001 00 01 7f000001 0035")), undefined, /reserved/);
    assertProtocolError(
      () => parseUdpDatagram(hex("0000 00 07 7f000001 0035")),
      Reply.ADDRESS_TYPE_NOT_SUPPORTED,
    );
    assertProtocolError(
      () => parseUdpDatagram(hex("0000 00 03 00 0035")),
      Reply.GENERAL_FAILURE,
      /empty domain/,
    );
  });

  test("a DOMAINNAME is checked and normalised like a request's", () => {
    const header = (name: string) =>
      Buffer.concat([
        hex("0000 00 03"),
        Buffer.from([name.length]),
        Buffer.from(name, "latin1"),
        hex("0035 ff"),
      ]);
    assertProtocolError(
      () => parseUdpDatagram(header("localhost\0.example.com")),
      Reply.HOST_UNREACHABLE,
      /^invalid host name "localhost\\x00\.example\.com": NUL byte at 9$/,
    );
    assertProtocolError(() => parseUdpDatagram(header("2130706433")), Reply.HOST_UNREACHABLE, /dotted-quad/);
    assert.deepEqual(parseUdpDatagram(header("Example.COM.")).address, {
      type: "domain",
      host: "example.com",
      port: 53,
    });
    assert.deepEqual(parseUdpDatagram(header("127.0.0.1")).address, {
      type: "ipv4",
      host: "127.0.0.1",
      port: 53,
    });
  });

  test("the encoder refuses an invalid FRAG", () => {
    const a = { type: "ipv4" as const, host: "127.0.0.1", port: 53 };
    for (const frag of [-1, 256, 1.5]) assert.throws(() => encodeUdpHeader(a, frag), RangeError);
  });
});

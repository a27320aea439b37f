import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { addressOf } from "../../src/protocol/address.js";
import { encodeSocks4Request, parseSocks4Reply } from "../../src/protocol/socks4.js";
import { encodeGreeting, parseMethodSelection } from "../../src/protocol/socks5.js";
import { encodeUserPassRequest, parseUserPassReply } from "../../src/protocol/userpass.js";
import { FERRY_BIN } from "../helpers/ferry-process.js";
import { waitFor, within } from "../helpers/net.js";
import { startDaemon } from "../helpers/process.js";
import { TestClient } from "../helpers/socks.js";

// Client-chosen text with control characters: a user name that would forge a second log line,
// and a SOCKS4 USERID (logged as `ident`) with a CR LF, a control code, an ESC (terminal
// control), DEL, a C1 code (NEL) and U+2028. Each must appear in the log as visible escapes, on
// the line it belongs to. (A host name with them never gets this far: the codec refuses it.)
const FORGED_USER = "bob\nINFO forged";
const SHOWN_USER = "bob\\nINFO forged";
const NASTY_IDENT = "evil\r\n[12:00:00.000] INFO: forged\u0001\u001b[2J\u007f\u0085\u2028";
const SHOWN_IDENT = "evil\\r\\n[12:00:00.000] INFO: forged\\x01\\x1b[2J\\x7f\\x85\\u2028";

let dir: string;
let config: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "ferry-log-escape-"));
  config = path.join(dir, "ferry.yaml");
  // Deny every request (and log the decision): nothing is dialled, no name is looked up.
  // Limits that fit the open-files limit, so no start-up line about it joins the count.
  await writeFile(config, "limits: { sessions: 100, handshakes: 100 }\nrules:\n  - deny: { log: true }\n");
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The control characters in `text` other than its line breaks, as code points. */
function rawControls(text: string): number[] {
  const found: number[] = [];
  for (const c of text) {
    const cp = c.codePointAt(0)!;
    if (cp !== 0x0a && (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f) || cp === 0x2028 || cp === 0x2029))
      found.push(cp);
  }
  return found;
}

/** The number of log records the scenario below produces, whatever the format. */
const RECORDS = [
  /ferry listening on/,
  /GSSAPI: (available|not available)/,
  /failed login for bob/,
  /session failed/, // bob's
  /session failed/, // the SOCKS4 client's: this server wants a login, which SOCKS4 cannot carry
  /SIGTERM: no longer accepting/,
  /stopped/,
].length;

async function scenario(format: "json" | "pretty"): Promise<string> {
  // A session's end line in each format.
  const ended = format === "json" ? /"event":"session\.end"/g : / → .* failed: /g;
  const sessionsEnded = (): number => (ferry.output().match(ended) ?? []).length;
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" };
  delete env.FORCE_COLOR;
  const ferry = await startDaemon({
    name: "ferry serve",
    command: process.execPath,
    args: (port) => [
      FERRY_BIN,
      "serve",
      "--listen",
      `127.0.0.1:${port}`,
      "--config",
      config,
      "--user",
      "alice:alice-secret",
      "--log-format",
      format,
      "--log-level",
      "info",
    ],
    env,
    ready: (d) => waitFor(() => d.output().includes("ferry listening on"), 20_000, "ferry to listen"),
  });
  try {
    const bob = await TestClient.connect(ferry.port);
    bob.write(encodeGreeting({ methods: [2] }));
    assert.equal(await bob.read(parseMethodSelection), 2);
    bob.write(encodeUserPassRequest({ username: FORGED_USER, password: "whatever" }));
    assert.equal((await bob.read(parseUserPassReply, 30_000)).status, 1);
    await bob.waitClosed(10_000);
    bob.destroy();
    await waitFor(() => sessionsEnded() === 1, 10_000, "bob's session line");

    const four = await TestClient.connect(ferry.port);
    four.write(
      encodeSocks4Request({ command: "connect", address: addressOf("127.0.0.1", 80), userId: NASTY_IDENT }),
    );
    assert.equal((await four.read(parseSocks4Reply)).reply, 91, "refused: SOCKS4 cannot log in");
    four.destroy();
    await waitFor(() => sessionsEnded() === 2, 10_000, "the SOCKS4 session line");

    const exit = await within(ferry.stop(15_000), 20_000, "the stop");
    assert.equal(exit.code, 0, ferry.output());
    await waitFor(() => /stopped/.test(ferry.output()), 10_000, "the last log line");
    return ferry.output();
  } finally {
    await ferry.stop();
  }
}

describe("control characters a client sends are escaped in the log", () => {
  test("json: one line per record, and the values read back escaped", async () => {
    const out = await scenario("json");
    const lines = out.split("\n");
    assert.equal(lines.pop(), "", "the output ends with a line break");
    assert.equal(lines.length, RECORDS, out);
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    // No raw DEL, C1 or line separator either (JSON itself allows them in strings).
    assert.deepEqual(rawControls(out), []);
    const failedLogin = records.find((r) => String(r.msg).startsWith("failed login"));
    assert.equal(failedLogin?.user, SHOWN_USER, out);
    assert.equal(
      failedLogin?.msg,
      `failed login for ${SHOWN_USER} from 127.0.0.1 (failure 1; reply held ${failedLogin?.delayMs} ms)`,
    );
    const bobSession = records.find((r) => typeof r.session === "number" && r.user !== "alice");
    assert.match(String(bobSession?.reason), new RegExp(SHOWN_USER.replace(/\\/g, "\\\\")), out);
    const fourSession = records.find((r) => typeof r.session === "number" && r.protocol === "socks4");
    assert.equal(fourSession?.ident, SHOWN_IDENT, out);
  });

  test("pretty: one line per record, the text escaped", async () => {
    const out = await scenario("pretty");
    const lines = out.split("\n");
    assert.equal(lines.pop(), "", "the output ends with a line break");
    // Each record is one line that starts with its time; nothing starts a line of its own.
    for (const l of lines) assert.match(l, /^\d\d:\d\d:\d\d /, `a stray line: ${JSON.stringify(l)}`);
    assert.equal(lines.length, RECORDS, out);
    assert.deepEqual(rawControls(out), []);
    assert.ok(
      lines.some((l) => l.includes(`WARN failed login for ${SHOWN_USER} from 127.0.0.1`)),
      out,
    );
    // bob's session line, and the SOCKS4 client's with its claimed USERID.
    assert.ok(
      lines.some((l) => l.includes(`→ - ${SHOWN_USER} - failed: no reply`)),
      out,
    );
    assert.ok(
      lines.some((l) => l.includes(`→ - ident:${SHOWN_IDENT} - failed:`)),
      out,
    );
  });
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { judge, median, type SoakSample } from "../../bench/soak-judge.js";

const MiB = 1024 * 1024;

/** `n` samples every 5 s; `grow(i)` is added to the RSS and the heap of sample i. */
function samples(n: number, grow: (i: number) => number = () => 0): SoakSample[] {
  return Array.from({ length: n }, (_, i) => ({
    t: i * 5,
    rss: 120 * MiB + grow(i) + (i % 3) * MiB, // a little sawtooth, as GC makes
    heapUsed: 20 * MiB + grow(i) + (i % 4) * 2 * MiB,
    fds: 30 + (i % 5),
    eldP99: 15 + (i % 2),
    eldMax: 30,
  }));
}

test("median", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
});

test("a flat run passes", () => {
  const v = judge(samples(36), 30);
  assert.ok(v.ok, v.lines.join("; "));
});

test("steady growth fails even when every sample is under the ceiling", () => {
  // 1 MiB per sample: 36 MiB over a 3-minute run, far past the 24 MiB slack on RSS.
  const v = judge(
    samples(72, (i) => i * MiB),
    30,
  );
  assert.equal(v.ok, false);
  assert.match(v.lines.join("\n"), /rss grew/);
  assert.match(v.lines.join("\n"), /heapUsed grew/);
});

test("growth only during the warm-up is not judged", () => {
  const v = judge(
    samples(72, (i) => Math.min(i, 6) * 10 * MiB),
    30,
  );
  assert.ok(v.ok, v.lines.join("; "));
});

test("an fd leak fails", () => {
  const s = samples(72).map((x, i) => ({ ...x, fds: 30 + i * 3 }));
  const v = judge(s, 30);
  assert.equal(v.ok, false);
  assert.match(v.lines.join("\n"), /fds grew/);
});

test("a spike over a ceiling fails", () => {
  const s = samples(36);
  s[30] = { ...s[30]!, eldP99: 5000 };
  const v = judge(s, 30);
  assert.equal(v.ok, false);
  assert.match(v.lines.join("\n"), /eldP99 reached/);
});

test("too short a run is not called flat", () => {
  assert.equal(judge(samples(5), 30).ok, false);
});

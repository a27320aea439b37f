import type { Registry } from "prom-client";
import { run } from "./process.js";
import { SYSTEM_PYTHON } from "./tools.js";

/**
 * The Prometheus text format read with a parser, never a regex of our own: the reference Python
 * client's (Debian's python3-prometheus-client), which raises on anything Prometheus would not
 * take. The npm parsers tried (parse-prometheus-text-format and its forks) lose the labels and
 * counts of labelled histograms, so they cannot check ours.
 */

export interface Sample {
  /** The sample's own name: `ferry_sessions_total`, `ferry_dial_duration_seconds_count`, ... */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

/** What the Python module and package are called, for requirePythonModule. */
export const PROMETHEUS_PARSER = { module: "prometheus_client", debianPackage: "python3-prometheus-client" };

const SCRIPT = `
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation, "samples": [
        {"name": s.name, "labels": s.labels, "value": s.value if math.isfinite(s.value) else str(s.value)}
        for s in f.samples]})
json.dump(out, sys.stdout)
`;

export async function parsePrometheus(text: string): Promise<Family[]> {
  const r = await run(SYSTEM_PYTHON, ["-c", SCRIPT], { input: text, timeoutMs: 30_000 });
  if (r.code !== 0)
    throw new Error(`the Prometheus parser refused the text: ${r.stderr.trim().slice(-1500)}`);
  return JSON.parse(r.stdout.toString("utf8")) as Family[];
}

export class Scrape {
  readonly samples: Sample[];
  constructor(
    readonly text: string,
    readonly families: Family[],
  ) {
    this.samples = families.flatMap((f) => f.samples);
  }

  private named(name: string): Sample[] {
    const found = this.samples.filter((s) => s.name === name);
    if (found.length === 0) throw new Error(`no sample named ${name} in the scrape`);
    return found;
  }

  /** The sample `name` whose labels are exactly `labels`; 0 when that series is absent. */
  value(name: string, labels: Record<string, string> = {}): number {
    return this.named(name).find((s) => sameLabels(s.labels, labels))?.value ?? 0;
  }

  /** Every non-zero sample of `name` keyed "label=value,..." (labels sorted). */
  nonZero(name: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.named(name)) {
      if (s.value === 0) continue;
      const key = Object.entries(s.labels)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}=${v}`)
        .join(",");
      out[key] = s.value;
    }
    return out;
  }

  /** The sum of the samples of `name`. */
  total(name: string): number {
    return this.named(name).reduce((n, s) => n + s.value, 0);
  }

  /** Every label value of every sample (bucket bounds aside). */
  labelValues(): Set<string> {
    const out = new Set<string>();
    for (const s of this.samples) for (const [k, v] of Object.entries(s.labels)) if (k !== "le") out.add(v);
    return out;
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** GET `path` on the admin listener, with the bearer token when given. */
export async function adminGet(
  base: string,
  path: string,
  token?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string; headers: Headers }> {
  const res = await fetch(`${base}${path}`, {
    headers: { ...headers, ...(token !== undefined && { authorization: `Bearer ${token}` }) },
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** A scrape of /metrics, parsed; fails unless the answer is 200 and parses. */
export async function scrape(base: string, token: string): Promise<Scrape> {
  const res = await adminGet(base, "/metrics", token);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${res.text}`);
  return new Scrape(res.text, await parsePrometheus(res.text));
}

/** One series of a metric straight from a registry (prom-client's own reading, in-process tests). */
export async function seriesValue(
  source: { registry: Registry },
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const metric = source.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const found = (await metric.get()).values.find(
    (v) =>
      Object.keys(v.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  );
  return found?.value ?? 0;
}

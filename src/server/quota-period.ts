/**
 * Quota periods are calendar days and months in UTC: the same boundaries for every worker and
 * every host, whatever their time zone, and no daylight-saving days of 23 or 25 hours.
 */
export type QuotaPeriod = "day" | "month";

/** Which period `now` (ms since the epoch) falls in, as a store key: "day:2026-12-02", "month:2026-12". */
export function periodKey(period: QuotaPeriod, now: number): string {
  const iso = new Date(now).toISOString();
  return period === "day" ? `day:${iso.slice(0, 10)}` : `month:${iso.slice(0, 7)}`;
}

/** When the period `now` falls in ends (ms since the epoch): the next UTC midnight or first of a month. */
export function periodEnd(period: QuotaPeriod, now: number): number {
  const d = new Date(now);
  return period === "day"
    ? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1)
    : Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** The keys still current at `now` (the day's and the month's); counts under any other are done with. */
export function currentKeys(now: number): Set<string> {
  return new Set([periodKey("day", now), periodKey("month", now)]);
}

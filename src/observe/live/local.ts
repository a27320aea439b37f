import { formatBytes } from "../../config/units.js";
import type { SessionRecord } from "../../server/context.js";
import type { Quotas } from "../../server/quotas.js";
import type { FerryServer } from "../../server/server.js";
import type { ServerState } from "../../server/state.js";
import { DenialRing } from "./denials.js";
import type { LiveSnapshot, LiveSource, SessionView, UserColumn, UserRow } from "./view.js";
import { sessionView } from "./view.js";

/**
 * Adds its own key to users' rows (a quota's use, say), and says which in `column`. Asked once
 * per snapshot; a user it has a value for gets a row even without sessions since the start.
 * No values: no column.
 */
export interface UserColumnProvider {
  column: UserColumn;
  values(): Promise<ReadonlyMap<string, unknown>>;
}

/** Each user's transfer quota as "used of limit per period" (docs/quotas.md). */
export function quotaColumn(quotas: Quotas): UserColumnProvider {
  return {
    column: { key: "quota", label: "quota used" },
    values: async () =>
      new Map(
        (await quotas.report()).map((q) => [
          q.user,
          `${formatBytes(q.used)} of ${formatBytes(q.limit)} this ${q.period}${q.exhausted ? " (used up)" : ""}`,
        ]),
      ),
  };
}

/** Sessions ended so far, per user (a session without one counts under ""). */
interface Ended {
  sessions: number;
  bytesUp: number;
  bytesDown: number;
}

/**
 * The page's figures for one FerryServer, counted from its events from the moment this is made
 * (make it before the server listens): running sessions from `server.sessions()`, denials from
 * the records, refused connections and decision events, per-user totals from established and
 * ended sessions plus the bytes of the running ones.
 */
export class LocalLive implements LiveSource {
  readonly denials = new DenialRing();
  private readonly ended = new Map<string, Ended>();
  private readonly providers: readonly UserColumnProvider[];

  constructor(
    private readonly server: FerryServer,
    state: ServerState,
  ) {
    this.providers = [quotaColumn(state.quotas)];
    server.on("established", (r) => {
      this.tally(r).sessions++;
    });
    server.on("session", (r) => {
      this.denials.session(r);
      // A refused session moved nothing; one that did counts, established or not.
      if (r.bytesUp === 0 && r.bytesDown === 0) return;
      const t = this.tally(r);
      t.bytesUp += r.bytesUp;
      t.bytesDown += r.bytesDown;
    });
    server.on("refused", (r) => this.denials.refused(r));
    state.on("decision", (e) => this.denials.decision(e));
  }

  private tally(r: SessionRecord): Ended {
    const key = r.user ?? "";
    let t = this.ended.get(key);
    if (!t) {
      t = { sessions: 0, bytesUp: 0, bytesDown: 0 };
      this.ended.set(key, t);
    }
    return t;
  }

  /** Running sessions, oldest first. */
  sessionViews(): SessionView[] {
    return [...this.server.sessions()].map(sessionView);
  }

  async users(): Promise<{ rows: UserRow[]; columns: UserColumn[] }> {
    const rows = new Map<string, UserRow>();
    for (const [user, t] of this.ended) rows.set(user, { user, active: 0, ...t });
    for (const r of this.server.sessions()) {
      const user = r.user ?? "";
      let row = rows.get(user);
      if (!row) {
        row = { user, sessions: 0, active: 0, bytesUp: 0, bytesDown: 0 };
        rows.set(user, row);
      }
      row.active++;
      row.bytesUp += r.bytesUp;
      row.bytesDown += r.bytesDown;
    }
    const columns: UserColumn[] = [];
    for (const p of this.providers) {
      const values = await p.values();
      if (values.size === 0) continue;
      columns.push(p.column);
      for (const [user, value] of values) {
        let row = rows.get(user);
        if (!row) {
          row = { user, sessions: 0, active: 0, bytesUp: 0, bytesDown: 0 };
          rows.set(user, row);
        }
        row[p.column.key] = value;
      }
    }
    return { rows: [...rows.values()].sort((a, b) => a.user.localeCompare(b.user)), columns };
  }

  async snapshot(): Promise<LiveSnapshot> {
    const { rows, columns } = await this.users();
    return {
      at: Date.now(),
      sessions: this.sessionViews(),
      denials: this.denials.list(),
      users: rows,
      columns,
    };
  }

  end(id: string, reason: string): Promise<SessionView | undefined> {
    const n = Number(id);
    for (const r of this.server.sessions()) {
      if (r.id !== n) continue;
      const view = sessionView(r);
      return Promise.resolve(this.server.endSession(n, reason) ? view : undefined);
    }
    return Promise.resolve(undefined);
  }

  endUser(user: string, reason: string): Promise<SessionView[]> {
    // Listed first: ending one takes it out of the map being walked.
    const mine = [...this.server.sessions()].filter((r) => r.user === user);
    const ended = mine.filter((r) => this.server.endSession(r.id, reason));
    return Promise.resolve(ended.map(sessionView));
  }
}

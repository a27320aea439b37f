import type { SessionRecord } from "../../server/context.js";
import type { FerryServer } from "../../server/server.js";
import type { ServerState } from "../../server/state.js";
import { DenialRing } from "./denials.js";
import type { LiveSnapshot, LiveSource, SessionView, UserColumn, UserRow } from "./view.js";
import { sessionView } from "./view.js";

/** Adds its own keys to each user's row (a quota's use, say), and says which in `column`. */
export interface UserColumnProvider {
  column: UserColumn;
  value(user: string): unknown;
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
  private readonly providers: UserColumnProvider[] = [];

  constructor(
    private readonly server: FerryServer,
    state: ServerState,
  ) {
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

  /** Another column in the users table. */
  addUserColumn(provider: UserColumnProvider): void {
    this.providers.push(provider);
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

  users(): UserRow[] {
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
    for (const row of rows.values()) {
      for (const p of this.providers) row[p.column.key] = p.value(row.user);
    }
    return [...rows.values()].sort((a, b) => a.user.localeCompare(b.user));
  }

  snapshot(): Promise<LiveSnapshot> {
    return Promise.resolve({
      at: Date.now(),
      sessions: this.sessionViews(),
      denials: this.denials.list(),
      users: this.users(),
      columns: this.providers.map((p) => p.column),
    });
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

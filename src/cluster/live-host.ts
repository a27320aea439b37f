import { DENIALS_KEPT } from "../observe/live/denials.js";
import type {
  DenialView,
  LiveSnapshot,
  LiveSource,
  SessionView,
  UserColumn,
  UserRow,
} from "../observe/live/view.js";
import type { ToPrimary, ToWorker } from "./messages.js";

/** A worker as the primary sees it, for the admin page. */
export interface LiveWorker {
  /** 1-based, kept by a replacement. */
  index: number;
  /** Sends if the worker is running; false if it is not. */
  send(m: ToWorker): boolean;
}

/** A worker's answer to the admin page, at most this late; one that is later is left out. */
const ANSWER_MS = 2000;

/**
 * The admin page's figures in a primary: each worker is asked for its own (`live`), and the
 * answers merged. Session ids become "WORKER:ID", so an end request reaches the worker that
 * holds the session.
 */
export class ClusterLive implements LiveSource {
  private readonly waiting = new Map<number, (m: ToPrimary) => void>();
  private nextId = 1;

  constructor(
    private readonly workers: () => LiveWorker[],
    private readonly answerMs = ANSWER_MS,
  ) {}

  /** A worker's message: true when it was an answer to this (and so taken). */
  receive(m: ToPrimary): boolean {
    if (m.ferry !== "live" && m.ferry !== "ended") return false;
    this.waiting.get(m.id)?.(m);
    return true;
  }

  private ask<T>(w: LiveWorker, build: (id: number) => ToWorker, pick: (m: ToPrimary) => T | undefined) {
    const id = this.nextId++;
    return new Promise<T | undefined>((resolve) => {
      const done = (v: T | undefined): void => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(v);
      };
      const timer = setTimeout(() => done(undefined), this.answerMs);
      this.waiting.set(id, (m) => done(pick(m)));
      if (!w.send(build(id))) done(undefined);
    });
  }

  async snapshot(): Promise<LiveSnapshot> {
    const workers = this.workers();
    const answers = await Promise.all(
      workers.map((w) =>
        this.ask(
          w,
          (id) => ({ ferry: "live", id }),
          (m) => (m.ferry === "live" ? m.snapshot : undefined),
        ),
      ),
    );
    const sessions: SessionView[] = [];
    const denials: DenialView[] = [];
    const users = new Map<string, UserRow>();
    const columns = new Map<string, UserColumn>();
    const missing: number[] = [];
    answers.forEach((s, i) => {
      const worker = workers[i]!.index;
      if (!s) {
        missing.push(worker);
        return;
      }
      for (const v of s.sessions) sessions.push({ ...v, id: `${worker}:${v.id}`, worker });
      for (const d of s.denials) {
        const prefixed: DenialView = { ...d, id: `${worker}:${d.id}`, worker };
        if (d.session !== undefined) prefixed.session = `${worker}:${d.session}`;
        denials.push(prefixed);
      }
      for (const c of s.columns) columns.set(c.key, c);
      for (const row of s.users) {
        const sum = users.get(row.user);
        if (!sum) {
          users.set(row.user, { ...row });
          continue;
        }
        sum.sessions += row.sessions;
        sum.active += row.active;
        sum.bytesUp += row.bytesUp;
        sum.bytesDown += row.bytesDown;
      }
    });
    sessions.sort((a, b) => a.startedAt - b.startedAt);
    denials.sort((a, b) => b.at - a.at);
    const snapshot: LiveSnapshot = {
      at: Date.now(),
      sessions,
      denials: denials.slice(0, DENIALS_KEPT),
      users: [...users.values()].sort((a, b) => a.user.localeCompare(b.user)),
      columns: [...columns.values()],
    };
    if (missing.length) snapshot.missing = missing;
    return snapshot;
  }

  async end(id: string, reason: string): Promise<SessionView | undefined> {
    const m = /^(\d+):(\d+)$/.exec(id);
    const w = m && this.workers().find((x) => x.index === Number(m[1]));
    if (!m || !w) return undefined;
    const ended = await this.tell(w, { session: m[2]!, reason });
    return ended[0];
  }

  async endUser(user: string, reason: string): Promise<SessionView[]> {
    const all = await Promise.all(this.workers().map((w) => this.tell(w, { user, reason })));
    return all.flat();
  }

  /** Asks one worker to end sessions; the ones it ended, with their ids as the page knows them. */
  private async tell(w: LiveWorker, what: { session?: string; user?: string; reason: string }) {
    const ended = await this.ask(
      w,
      (id) => ({ ferry: "end", id, ...what }),
      (m) => (m.ferry === "ended" ? m.ended : undefined),
    );
    return (ended ?? []).map((v) => ({ ...v, id: `${w.index}:${v.id}`, worker: w.index }));
  }
}

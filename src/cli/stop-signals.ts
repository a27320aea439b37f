import { ev } from "../observe/events.js";
import type { Logger } from "../observe/logger.js";

/** A second stop signal sooner than this is a duplicate delivery, not a request to cut sessions. */
const REPEAT_SIGNAL_MS = 1000;

/**
 * Sessions are cut at the drain deadline and end within milliseconds. If the process is still
 * alive this long after that, something a session left behind (a socket, a timer) holds it, and
 * it exits anyway: a stop must never need SIGKILL.
 */
export const EXIT_GRACE_MS = 3000;

export interface StopActions {
  /** First stop: stop accepting and drain for up to drainMs. */
  drain(signal: string): void;
  /** A later stop during the drain: cut every session now. */
  cut(signal: string): void;
  /** Still running `graceMs` after the sessions should have ended: say so; the process then exits. */
  overdue(): void;
}

/**
 * The stop rules shared by a single process and a cluster's primary: the first stop drains, a
 * repeat within a second is the same stop (`timeout`, npm and a terminal's Ctrl-C each deliver
 * one to several processes of a group), a later one cuts every session, and a process that has
 * not ended by the deadline exits anyway. Returns the function to call with each stop.
 */
export function stopper(
  log: Logger,
  drainMs: number,
  graceMs: number,
  actions: StopActions,
): { stop: (signal: string, now?: boolean) => void } {
  let stoppingSince: number | undefined;
  let backstop: NodeJS.Timeout | undefined;
  /** Exits `ms` from now unless the process has ended by itself (the timer does not hold it). */
  const exitAfter = (ms: number): void => {
    clearTimeout(backstop);
    backstop = setTimeout(() => {
      actions.overdue();
      process.exit(0);
    }, ms);
    backstop.unref();
  };
  const stop = (signal: string, now = false): void => {
    if (stoppingSince === undefined && !now) {
      stoppingSince = Date.now();
      exitAfter(drainMs + graceMs);
      actions.drain(signal);
      return;
    }
    if (!now && Date.now() - (stoppingSince ?? 0) < REPEAT_SIGNAL_MS) {
      log.debug(
        ev("shutdown.repeat", { signal }),
        `${signal} repeated within ${REPEAT_SIGNAL_MS} ms: taken as the same stop`,
      );
      return;
    }
    stoppingSince ??= Date.now();
    log.warn(ev("shutdown.cut", { signal }), `${signal} during the drain: closing every session now`);
    exitAfter(graceMs);
    actions.cut(signal);
  };
  return { stop };
}

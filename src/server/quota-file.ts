import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { currentKeys } from "./quota-period.js";
import type { LocalQuotaStore, QuotaSnapshot } from "./quota-store.js";

/** How often the counts are written while they change; a crash loses at most this much counting. */
export const QUOTA_SAVE_MS = 10_000;

interface StateFileBody {
  ferry: "quota";
  version: 1;
  savedAt: string;
  periods: QuotaSnapshot;
}

/**
 * The quota state file of one store: read at start, written atomically (a temporary file in the
 * same directory, then rename) every QUOTA_SAVE_MS while counts change, and at close. Ended
 * periods are dropped as they end.
 */
export class QuotaStateFile {
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();
  private lastError: string | undefined;

  private constructor(
    readonly file: string,
    readonly store: LocalQuotaStore,
    private readonly onError: (message: string) => void,
    private readonly now: () => number,
  ) {}

  /** Reads `file` into `store` (a missing file is an empty one) and starts saving. */
  static async open(
    file: string,
    store: LocalQuotaStore,
    onError: (message: string) => void,
    now: () => number = Date.now,
  ): Promise<QuotaStateFile> {
    let text: string | undefined;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        throw new Error(`cannot read the quota state file ${file}: ${(err as Error).message}`);
    }
    if (text !== undefined) store.restore(parseStateFile(text, file));
    store.prune(currentKeys(now()));
    store.dirty = false;
    const f = new QuotaStateFile(file, store, onError, now);
    f.timer = setInterval(() => void f.save(), QUOTA_SAVE_MS);
    f.timer.unref();
    return f;
  }

  /** Writes the counts if they changed; one write at a time. */
  save(): Promise<void> {
    this.saving = this.saving.then(() => this.write());
    return this.saving;
  }

  /** Stops the timer and writes what is left. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.save();
  }

  private async write(): Promise<void> {
    this.store.prune(currentKeys(this.now()));
    if (!this.store.dirty) return;
    this.store.dirty = false;
    const body: StateFileBody = {
      ferry: "quota",
      version: 1,
      savedAt: new Date(this.now()).toISOString(),
      periods: this.store.snapshot(),
    };
    const temp = `${this.file}.${process.pid}.tmp`;
    try {
      await mkdir(path.dirname(this.file), { recursive: true });
      await writeFile(temp, `${JSON.stringify(body)}\n`, { mode: 0o600 });
      await rename(temp, this.file);
      this.lastError = undefined;
    } catch (err) {
      this.store.dirty = true;
      await rm(temp, { force: true }).catch(() => {});
      const message = `cannot write the quota state file ${this.file}: ${(err as Error).message}; counts are kept in memory and written when it can be`;
      // Once per cause, not every ten seconds.
      if (message !== this.lastError) this.onError(message);
      this.lastError = message;
    }
  }
}

function parseStateFile(text: string, file: string): QuotaSnapshot {
  let body: Partial<StateFileBody> | undefined;
  try {
    body = JSON.parse(text) as Partial<StateFileBody>;
  } catch {
    body = undefined;
  }
  if (body?.ferry !== "quota" || typeof body.periods !== "object" || body.periods === null) {
    throw new Error(
      `${file} is not a Ferry quota state file; move it away (the counts then start from zero) or set limits.quota.stateFile`,
    );
  }
  return body.periods;
}

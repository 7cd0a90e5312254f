/**
 * A watch that never misses an event: it lists, then watches; resumes from its cursor after a
 * disconnect (with backoff and jitter); and when the notifier no longer keeps that cursor
 * (RESUME_TOKEN_EXPIRED, Kubernetes' 410 Gone) it says so with a `relisted` item and starts
 * again from a fresh snapshot — as client-go's informers do, and as the Python client does.
 *
 * Each (job, version) is yielded at most once: snapshots and events that repeat what was
 * already seen are dropped. A `CursorStore` keeps the cursor of the last item the subscriber
 * took, so a subscriber that restarts resumes where it left off.
 */
import { rename, readFile, writeFile } from "node:fs/promises";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Job } from "./gen/assay/common/v1/job_pb.js";
import { JobStatus } from "./gen/assay/common/v1/job_pb.js";
import type { JobEvent } from "./gen/assay/events/v1/events_pb.js";
import type { NotifierService, WatchJobsResponse } from "./gen/assay/notifier/v1/notifier_service_pb.js";
import { ResumeTokenExpired, toAssayError } from "./errors.js";
import { cancelled, sleep } from "./retry.js";

export const INITIAL_BACKOFF_MS = 100;
export const MAX_BACKOFF_MS = 5_000;
/** Jobs whose latest version the watch remembers to drop repeats (oldest forgotten first). */
export const REMEMBERED_JOBS = 100_000;
/** Errors a reconnect cannot cure: thrown to the subscriber. */
const FATAL = new Set<Code>([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.NotFound,
  Code.Unimplemented,
]);

/**
 * What a watch tells: a job as it is now (`snapshot`), a status change (`event`), that the
 * watch lost its place and relists (`relisted`: the gap is marked; the snapshots that follow
 * replace what the subscriber knew), or, only for a watch opened with `bookmarks: true`,
 * where it stands (`bookmark`: every event up to `cursor` was yielded; the first bookmark of
 * a watch says it is live).
 */
export type WatchKind = "snapshot" | "event" | "relisted" | "bookmark";

/** One item of a watch. */
export class WatchItem {
  constructor(
    readonly kind: WatchKind,
    /** The watch's cursor as of this item. */
    readonly cursor: bigint,
    /** For `snapshot`: the job as it is now. */
    readonly job?: Job,
    /** For `event`: the status change. */
    readonly event?: JobEvent,
  ) {}

  /** The job this item is about ("" for `relisted` and `bookmark`). */
  get jobId(): string {
    return (this.job ?? this.event)?.jobId ?? "";
  }

  /** The job's status as of this item. */
  get status(): JobStatus {
    return (this.job ?? this.event)?.status ?? JobStatus.UNSPECIFIED;
  }

  /** The job's version as of this item. */
  get version(): bigint {
    return this.job?.version ?? this.event?.jobVersion ?? 0n;
  }
}

/** Where a watch keeps its cursor between runs. */
export interface CursorStore {
  /** The cursor saved last, or undefined. */
  load(): bigint | undefined | Promise<bigint | undefined>;
  /** Keep `cursor` (called after the subscriber took the item it belongs to). */
  save(cursor: bigint): void | Promise<void>;
}

/** A cursor in a file, replaced atomically (write, then rename) on every save. */
export class FileCursorStore implements CursorStore {
  constructor(readonly path: string) {}

  async load(): Promise<bigint | undefined> {
    try {
      return BigInt((await readFile(this.path, "utf8")).trim());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        return undefined;
      }
      throw err;
    }
  }

  async save(cursor: bigint): Promise<void> {
    const staged = `${this.path}.tmp`;
    await writeFile(staged, `${cursor}\n`);
    await rename(staged, this.path);
  }
}

/** What a watch follows, and how. */
export interface WatchOptions {
  /** Operators and services: this user's jobs ("" : the caller's, or everyone's). */
  userId?: string;
  /** Only this job. */
  jobId?: string;
  /** Start with the events after this cursor (the `cursorStore`'s cursor wins). */
  resumeAfter?: bigint;
  /** List the jobs in scope first when starting without a cursor, and after a relist. */
  snapshot?: boolean;
  /** Keeps the cursor of the last item taken; a restarted subscriber resumes there. */
  cursorStore?: CursorStore;
  /** Yield the notifier's bookmarks as `bookmark` items. */
  bookmarks?: boolean;
  /** Ends the watch: the iterator then rejects with `Cancelled`. */
  signal?: AbortSignal;
}

/**
 * Snapshots, then events, for ever; reconnecting and resuming as needed. Stop it with
 * `break` (or `return()`), or with the `signal`.
 */
export async function* watchJobs(
  notifier: Client<typeof NotifierService>,
  options: WatchOptions,
): AsyncGenerator<WatchItem, void, undefined> {
  const { cursorStore: store, signal } = options;
  const stored = store ? await store.load() : undefined;
  let cursor = stored ?? options.resumeAfter ?? 0n;
  // Whether `cursor` is a place in the stream to resume after. Zero is one too once a watch
  // went live on an empty stream; unpositioned, a watch starts from now.
  let positioned = stored !== undefined || cursor > 0n;
  let listing = (options.snapshot ?? true) && !positioned; // until the first bookmark
  const versions = new Map<string, bigint>();
  const fresh = (jobId: string, version: bigint): boolean => {
    if ((versions.get(jobId) ?? 0n) >= version) {
      return false;
    }
    versions.delete(jobId); // re-inserted last: a Map iterates in insertion order
    versions.set(jobId, version);
    if (versions.size > REMEMBERED_JOBS) {
      versions.delete(versions.keys().next().value as string);
    }
    return true;
  };
  const take = (response: WatchJobsResponse): WatchItem | undefined => {
    const kind = response.kind;
    switch (kind.case) {
      case "bookmark":
        cursor = cursor > kind.value.cursor ? cursor : kind.value.cursor;
        positioned = true;
        listing = false;
        return options.bookmarks ? new WatchItem("bookmark", cursor) : undefined;
      case "event":
        cursor = cursor > kind.value.cursor ? cursor : kind.value.cursor;
        positioned = true;
        return fresh(kind.value.jobId, kind.value.jobVersion)
          ? new WatchItem("event", cursor, undefined, kind.value)
          : undefined;
      case "snapshot":
        return fresh(kind.value.jobId, kind.value.version)
          ? new WatchItem("snapshot", cursor, kind.value)
          : undefined;
      default:
        return undefined;
    }
  };

  let backoff = INITIAL_BACKOFF_MS;
  for (;;) {
    if (signal?.aborted) {
      throw cancelled(signal);
    }
    // One controller per stream: leaving the loop (break, return, an error) cancels it.
    const stream = new AbortController();
    const stop = (): void => stream.abort();
    signal?.addEventListener("abort", stop, { once: true });
    try {
      const request = {
        userId: options.userId ?? "",
        jobId: options.jobId ?? "",
        resumeAfter: cursor,
        resume: positioned,
        includeSnapshot: listing,
      };
      for await (const response of notifier.watchJobs(request, { signal: stream.signal })) {
        backoff = INITIAL_BACKOFF_MS; // the stream works: the next failure starts over
        const item = take(response);
        if (item !== undefined) {
          yield item;
        }
        const kind = response.kind.case;
        if (store && !listing && (kind === "event" || kind === "bookmark")) {
          await store.save(cursor);
        }
      }
    } catch (thrown) {
      if (signal?.aborted) {
        throw cancelled(signal);
      }
      if (!(thrown instanceof ConnectError)) {
        throw thrown; // not the stream's: the cursor store's, say
      }
      const error = toAssayError(thrown);
      if (error instanceof ResumeTokenExpired) {
        yield new WatchItem("relisted", cursor);
        cursor = 0n;
        positioned = false;
        listing = true;
        continue;
      }
      if (FATAL.has(error.code)) {
        throw error;
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      stream.abort();
    }
    await sleep(backoff * (0.5 + Math.random()), signal); // jitter spreads reconnects
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
}

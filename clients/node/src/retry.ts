/**
 * The retry policy of unary calls — what gRPC's service config gives the Python client:
 * UNAVAILABLE (and CANCELLED from a server that was stopping) retried with exponential backoff and full jitter, all attempts within the
 * call's one deadline — and an abortable sleep.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { Cancelled, DeadlineExceeded, toAssayError } from "./errors.js";

/** How UNAVAILABLE is retried on the calls that are safe to repeat. */
export interface RetryPolicy {
  /** Attempts in all, the first included (1: never retried). */
  readonly maxAttempts: number;
  /** The first retry waits up to this long (ms); each later one twice as long. */
  readonly initialBackoffMs: number;
  /** No retry waits longer than this (ms). */
  readonly maxBackoffMs: number;
}

/** The Python client's policy: 5 attempts, backoff 0.1 s doubling to 2 s. */
export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 2_000 };

/** Wait ms, or reject with `Cancelled` as soon as signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The error an aborted call rejects with. */
export function cancelled(signal: AbortSignal | undefined): Cancelled {
  return new Cancelled(Code.Canceled, "the call was aborted", {}, { cause: signal?.reason });
}

/** What one attempt gets: the caller's signal and the time left of the deadline. */
export interface Attempt {
  readonly signal: AbortSignal | undefined;
  readonly timeoutMs: number;
}

/**
 * Run `call` until it succeeds, fails with a code other than UNAVAILABLE (when `retried`),
 * runs out of attempts, or runs past `timeoutMs` (the deadline of all attempts together, as
 * in gRPC). Rejects with an `AssayError`.
 */
export async function withRetries<T>(
  call: (attempt: Attempt) => Promise<T>,
  options: { policy: RetryPolicy; retried: boolean; timeoutMs: number; signal: AbortSignal | undefined },
): Promise<T> {
  const { policy, signal } = options;
  const deadline = Date.now() + options.timeoutMs;
  let backoff = policy.initialBackoffMs;
  for (let attempt = 1; ; attempt++) {
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new DeadlineExceeded(Code.DeadlineExceeded, "the deadline passed between attempts");
    }
    try {
      return await call({ signal, timeoutMs: left });
    } catch (thrown) {
      if (signal?.aborted) {
        throw cancelled(signal);
      }
      if (!(thrown instanceof ConnectError)) {
        throw thrown; // not the call's failure
      }
      const error = toAssayError(thrown);
      // A server that stops as a call reaches it answers CANCELLED (the caller did not: its
      // own abort is handled above); safe to repeat like UNAVAILABLE on these calls.
      const transient = error.code === Code.Unavailable || error.code === Code.Canceled;
      const again = options.retried && transient && attempt < policy.maxAttempts;
      if (!again) {
        throw error;
      }
    }
    // Full jitter (a random wait up to the backoff), as gRPC's retry policy does.
    const wait = Math.min(Math.random() * backoff, Math.max(0, deadline - Date.now()));
    await sleep(wait, signal);
    backoff = Math.min(backoff * 2, policy.maxBackoffMs);
  }
}

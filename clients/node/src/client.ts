/**
 * `AssayClient`: typed, deadline-bounded calls to the AssessmentService and the notifier,
 * over gRPC (Connect's Node transport, HTTP/2).
 *
 * Submissions carry a request id (one is made when the caller gives none), so retrying them
 * is safe: UNAVAILABLE is retried with backoff on submissions and reads, and
 * DEADLINE_EXCEEDED by `submit` with the same id. Cancel and retry are never retried (a retry
 * charges again).
 */
import { randomUUID } from "node:crypto";
import * as http2 from "node:http2";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AssessmentService,
  type GetTokenBalanceResponse,
  type RetryJobResponse,
  type SubmitAssessmentResponse,
} from "./gen/assay/assessment/v1/assessment_service_pb.js";
import type { AssessmentDataSchema, RawResponsesSchema } from "./gen/assay/common/v1/assessment_pb.js";
import { type AnalysisResult, type Job, JobStatus } from "./gen/assay/common/v1/job_pb.js";
import { NotifierService } from "./gen/assay/notifier/v1/notifier_service_pb.js";
import { DeadlineExceeded } from "./errors.js";
import { JobList } from "./listing.js";
import { DEFAULT_RETRY, type RetryPolicy, cancelled, withRetries } from "./retry.js";
import { bearerInterceptor, type TokenSource } from "./tokens.js";
import { type WatchItem, type WatchOptions, watchJobs } from "./watch.js";

/** The statuses a job ends in (only RetryJob leaves one). */
export const TERMINAL: ReadonlySet<JobStatus> = new Set([
  JobStatus.COMPLETED,
  JobStatus.FAILED,
  JobStatus.CANCELLED,
]);

/** The PEM files of Assay's TLS (`ASSAY_TLS_CA`, and `ASSAY_TLS_CERT`/`ASSAY_TLS_KEY` for mTLS). */
export interface TlsOptions {
  readonly ca?: string | Buffer;
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
}

/** How to reach one Assay deployment. */
export interface AssayClientOptions {
  /** The assessment service: `host:port` (or a full `http://` / `https://` URL). */
  assessmentAddr: string;
  /** The notifier, for `watch()` and `wait()`. */
  notifierAddr?: string;
  /** A token, a file holding one (`{ file }`, re-read when it changes), or a function. */
  token: TokenSource;
  /** Turns on TLS (PEM contents). */
  tls?: TlsOptions;
  /** Run on every call, before the one that sends the token (tracing, for example). */
  interceptors?: Interceptor[];
  /** Every call's deadline unless it names its own (ms; default 10 s). */
  timeoutMs?: number;
  /** How UNAVAILABLE is retried on submissions and reads (default: 5 attempts, 0.1 s → 2 s). */
  retry?: Partial<RetryPolicy>;
}

/** What every call accepts. */
export interface CallOptions {
  /** Aborts the call: it then rejects with `Cancelled`. */
  signal?: AbortSignal;
  /** This call's deadline (ms), sent to the server, which honours it end to end. */
  timeoutMs?: number;
}

/** What `submit` accepts besides the assessment. */
export interface SubmitOptions extends CallOptions {
  rawResponses?: MessageInitShape<typeof RawResponsesSchema>;
  /** Empty: "AI-Driven Talent Mapping". */
  assessmentName?: string;
  /** The idempotency key (made here when not given): a repeat charges nothing. */
  requestId?: string;
  /** The profile's language (`id` or `en`; "" for the service's default). */
  locale?: string;
  /** Attempts in all when a call runs out of time (DEADLINE_EXCEEDED), same request id. */
  attempts?: number;
}

/** What `list` accepts. */
export interface ListOptions extends CallOptions {
  status?: JobStatus;
  /** Services and operators: this user's jobs. */
  userId?: string;
  pageSize?: number;
  /** The most jobs to list (0: all); `nextPageToken` then says where the rest start. */
  limit?: number;
  pageToken?: string;
}

/** The services a client calls. */
export type Service = "assessment" | "notifier";

/** A job that ended, and its result when it completed. */
export interface Finished {
  readonly job: Job;
  readonly result: AnalysisResult | undefined;
}

/** `host:port` as a base URL. */
function baseUrl(addr: string, tls: boolean): string {
  return /^https?:\/\//.test(addr) ? addr : `${tls ? "https" : "http"}://${addr}`;
}

/**
 * A client of one Assay deployment: the assessment service and, for watches, the notifier.
 * Connections open lazily, on the first call; `close()` (or `await using`) closes them.
 */
export class AssayClient implements AsyncDisposable {
  readonly timeoutMs: number;
  readonly retryPolicy: RetryPolicy;
  private readonly assessment: Client<typeof AssessmentService>;
  private readonly notifier: Client<typeof NotifierService> | undefined;
  private readonly sessions: Http2SessionManager[] = [];
  private readonly targets = new Map<Service, { url: string; tls: http2.SecureClientSessionOptions }>();

  constructor(options: AssayClientOptions) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retryPolicy = { ...DEFAULT_RETRY, ...options.retry };
    const interceptors = [...(options.interceptors ?? []), bearerInterceptor(options.token)];
    const open = (service: Service, addr: string) => {
      const url = baseUrl(addr, options.tls !== undefined);
      const tls = options.tls ? { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key } : {};
      // Keepalive as the Python client's channels (a ping every 30 s, 10 s to answer) while a
      // call or a watch is open; an idle connection is pinged before it is used again. Not
      // pingIdleConnection: its timer, re-armed by the last stream closing after close(),
      // would ping a destroyed session and throw where nothing can catch it.
      const session = new Http2SessionManager(url, { pingIntervalMs: 30_000, pingTimeoutMs: 10_000 }, tls);
      this.sessions.push(session);
      this.targets.set(service, { url, tls });
      return createGrpcTransport({ baseUrl: url, sessionManager: session, interceptors });
    };
    this.assessment = createClient(AssessmentService, open("assessment", options.assessmentAddr));
    this.notifier = options.notifierAddr ? createClient(NotifierService, open("notifier", options.notifierAddr)) : undefined;
  }

  /** Close the connections (calls in flight fail). */
  async close(): Promise<void> {
    for (const session of this.sessions) {
      session.abort();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Whether `service` answers: connects now and says true once the server has spoken HTTP/2
   * (its SETTINGS arrived, so TLS held, client certificate included), false as soon as the
   * attempt fails or `withinMs` (5 s) pass. A caller can tell "nothing listens there" apart
   * from a refused call before making one. The probe's connection is closed again.
   */
  reachable(service: Service = "assessment", options: { withinMs?: number; signal?: AbortSignal } = {}): Promise<boolean> {
    const target = this.targets.get(service);
    if (target === undefined) {
      return Promise.reject(new Error(`this client has no address for the ${service} service`));
    }
    const { signal } = options;
    if (signal?.aborted) {
      return Promise.reject(cancelled(signal));
    }
    return new Promise((resolve, reject) => {
      const session = http2.connect(target.url, target.tls);
      const done = (answered: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        session.destroy();
        resolve(answered);
      };
      const onAbort = (): void => {
        reject(cancelled(signal)); // settles first: done()'s resolve is then ignored
        done(false);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(done, options.withinMs ?? 5_000, false);
      session.once("remoteSettings", () => done(true));
      session.once("error", () => done(false));
      session.once("close", () => done(false));
      // A TLS 1.3 server refuses a client certificate after the client's handshake ended: the
      // alert reaches the socket, and no session event says so.
      session.once("connect", (_, socket) => {
        socket.once("error", () => done(false));
        socket.once("close", () => done(false));
      });
    });
  }

  /**
   * Charge a token and queue an analysis; the job and the balance left. The request id (made
   * here when not given) makes retries safe: a repeat returns the first reply and charges
   * nothing. UNAVAILABLE is retried with backoff; a call that runs out of time is tried
   * again, up to `attempts` (3). Pass `undefined` for an assessment that carries only
   * `rawResponses`.
   */
  async submit(
    assessmentData: MessageInitShape<typeof AssessmentDataSchema> | undefined,
    options: SubmitOptions = {},
  ): Promise<SubmitAssessmentResponse> {
    const request = {
      assessmentName: options.assessmentName ?? "",
      assessmentData,
      rawResponses: options.rawResponses,
      requestId: options.requestId || randomUUID().replaceAll("-", ""),
      locale: options.locale ?? "",
    };
    const attempts = options.attempts ?? 3;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.unary(options, true, (call) => this.assessment.submitAssessment(request, call));
      } catch (err) {
        if (!(err instanceof DeadlineExceeded) || attempt >= attempts) {
          throw err;
        }
      }
    }
  }

  /** One job. */
  async get(jobId: string, options: CallOptions = {}): Promise<Job> {
    const reply = await this.unary(options, true, (call) => this.assessment.getJob({ jobId }, call));
    return required(reply.job, "GetJob");
  }

  /**
   * Jobs (the caller's, or `userId`'s for services and operators), newest first:
   * `for await (const job of assay.list())`, or a page at a time with `.pages()`.
   */
  list(options: ListOptions = {}): JobList {
    const request = {
      status: options.status ?? JobStatus.UNSPECIFIED,
      userId: options.userId ?? "",
      pageToken: options.pageToken ?? "",
    };
    return new JobList(
      (page) => this.unary(options, true, (call) => this.assessment.listJobs(page, call)),
      request,
      { pageSize: options.pageSize ?? 100, limit: options.limit ?? 0 },
    );
  }

  /** Cancel a queued job, or ask a running one's worker to stop (never retried). */
  async cancel(jobId: string, options: CallOptions = {}): Promise<Job> {
    const reply = await this.unary(options, false, (call) => this.assessment.cancelJob({ jobId }, call));
    return required(reply.job, "CancelJob");
  }

  /** Queue a failed job again (charges again; never retried). */
  retry(jobId: string, options: CallOptions = {}): Promise<RetryJobResponse> {
    return this.unary(options, false, (call) => this.assessment.retryJob({ jobId }, call));
  }

  /** The token balance (the caller's, or `userId`'s): `.balance`, and `.userId` (whose). */
  balance(userId = "", options: CallOptions = {}): Promise<GetTokenBalanceResponse> {
    return this.unary(options, true, (call) => this.assessment.getTokenBalance({ userId }, call));
  }

  /**
   * A result row, by its job or by `resultId`: the inputs and, once the job completed, the
   * persona profile.
   */
  async result(jobId: string, options: CallOptions & { resultId?: string } = {}): Promise<AnalysisResult> {
    const request = { jobId, resultId: options.resultId ?? "" };
    const reply = await this.unary(options, true, (call) => this.assessment.getResult(request, call));
    return required(reply.result, "GetResult");
  }

  /**
   * Wait for a job to end (through the notifier); the final job, and its result when it
   * completed. Only the `signal` bounds the wait.
   */
  async wait(jobId: string, options: { signal?: AbortSignal } = {}): Promise<Finished> {
    for await (const item of this.watch({ jobId, signal: options.signal })) {
      if (TERMINAL.has(item.status)) {
        break;
      }
    }
    const job = await this.get(jobId, options);
    if (job.status !== JobStatus.COMPLETED) {
      return { job, result: undefined };
    }
    return { job, result: await this.result(jobId, options) };
  }

  /**
   * Every status change, as it happens, across disconnects: snapshots first, then events;
   * `relisted` marks a gap (the cursor expired). See `WatchOptions` and `WatchItem`.
   */
  watch(options: WatchOptions = {}): AsyncGenerator<WatchItem, void, undefined> {
    if (this.notifier === undefined) {
      throw new Error("watching needs the notifier's address (notifierAddr)");
    }
    return watchJobs(this.notifier, options);
  }

  private unary<T>(
    options: CallOptions,
    retried: boolean,
    call: (attempt: { signal: AbortSignal | undefined; timeoutMs: number }) => Promise<T>,
  ): Promise<T> {
    return withRetries(call, {
      policy: this.retryPolicy,
      retried,
      timeoutMs: options.timeoutMs ?? this.timeoutMs,
      signal: options.signal,
    });
  }
}

function required<T>(value: T | undefined, rpc: string): T {
  if (value === undefined) {
    throw new Error(`${rpc} answered without the message it promises`);
  }
  return value;
}

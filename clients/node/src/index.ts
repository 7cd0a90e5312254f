/**
 * `@assay/client`: the TypeScript client for Assay. Submit assessments (request ids, safe
 * retries), read jobs and results, and watch every status change across disconnects,
 * restarts and expired cursors. Failures reject with typed `AssayError`s.
 */
export {
  AssayClient,
  TERMINAL,
  type AssayClientOptions,
  type CallOptions,
  type Finished,
  type ListOptions,
  type SubmitOptions,
  type Service,
  type TlsOptions,
} from "./client.js";
export {
  AlreadyExists,
  AssayError,
  Cancelled,
  Code,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  ResumeTokenExpired,
  Unauthenticated,
  Unavailable,
  codeName,
  toAssayError,
  type FieldViolation,
} from "./errors.js";
export { JobList, MAX_PAGE_SIZE } from "./listing.js";
export { DEFAULT_RETRY, type RetryPolicy } from "./retry.js";
export { FileToken, bearerInterceptor, tokenGetter, type TokenSource } from "./tokens.js";
export { FileCursorStore, WatchItem, type CursorStore, type WatchKind, type WatchOptions } from "./watch.js";
export { type AnalysisResult, type Job, JobStatus } from "./gen/assay/common/v1/job_pb.js";
export type { JobEvent } from "./gen/assay/events/v1/events_pb.js";
export type {
  GetTokenBalanceResponse,
  ListJobsResponse,
  RetryJobResponse,
  SubmitAssessmentResponse,
} from "./gen/assay/assessment/v1/assessment_service_pb.js";

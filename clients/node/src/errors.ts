/**
 * Typed errors: every failed call rejects with an `AssayError` carrying the gRPC code, the
 * contract's reason (`INSUFFICIENT_TOKENS`, `INVALID_TRANSITION`, `RATE_LIMITED`,
 * `RESUME_TOKEN_EXPIRED`, `ERASED`, …) and, for bad input, one violation per field — read
 * from the `google.rpc.Status` the services send in the `grpc-status-details-bin` trailer.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

/** One bad field of a request: its path (`assessment_data.riasec.realistic`) and why. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** The gRPC name of a code: `INVALID_ARGUMENT`, `UNAVAILABLE`, … */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A call Assay refused or could not serve. */
export class AssayError extends Error {
  /** The gRPC status code (Connect's `Code`, numbered as gRPC numbers them). */
  readonly code: Code;
  /** The ErrorInfo reason, or "" when the error carried none. */
  readonly reason: string;
  /** The ErrorInfo metadata (`balance`, `job_id`, …). */
  readonly metadata: Readonly<Record<string, string>>;
  /** For INVALID_ARGUMENT: each bad field and why. */
  readonly violations: readonly FieldViolation[];

  constructor(
    code: Code,
    message: string,
    details: { reason?: string; metadata?: Record<string, string>; violations?: FieldViolation[] } = {},
    options?: { cause?: unknown },
  ) {
    const reason = details.reason ?? "";
    super(`${codeName(code)}${reason ? ` [${reason}]` : ""}: ${message}`, options);
    this.name = new.target.name;
    this.code = code;
    this.reason = reason;
    this.metadata = details.metadata ?? {};
    this.violations = details.violations ?? [];
  }

  /** True for the codes a caller may retry (with the same request id). */
  get retryable(): boolean {
    return this.code === Code.Unavailable || this.code === Code.DeadlineExceeded;
  }
}

/** The request is malformed; `violations` names each bad field. */
export class InvalidArgument extends AssayError {}
/** No such job or result for this caller (or its content was erased: reason ERASED). */
export class NotFound extends AssayError {}
/** The request id was already used with a different payload. */
export class AlreadyExists extends AssayError {}
/** Refused in the job's or account's state: INSUFFICIENT_TOKENS, INVALID_TRANSITION. */
export class FailedPrecondition extends AssayError {}
/** Too many jobs in flight or calls too fast (RATE_LIMITED); retry later. */
export class ResourceExhausted extends AssayError {}
/** The caller's identity may not make this call. */
export class PermissionDenied extends AssayError {}
/** The token is missing, expired or not trusted. */
export class Unauthenticated extends AssayError {}
/** A service, PostgreSQL or NATS is down for now; retry with the same request id. */
export class Unavailable extends AssayError {}
/** The call did not finish in time; retry with the same request id. */
export class DeadlineExceeded extends AssayError {}
/** The watch cursor is older than the events the notifier keeps (OUT_OF_RANGE). */
export class ResumeTokenExpired extends AssayError {}
/** The caller aborted the call (its AbortSignal fired). */
export class Cancelled extends AssayError {}

const BY_CODE: Partial<Record<Code, typeof AssayError>> = {
  [Code.InvalidArgument]: InvalidArgument,
  [Code.NotFound]: NotFound,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.FailedPrecondition]: FailedPrecondition,
  [Code.ResourceExhausted]: ResourceExhausted,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.Unavailable]: Unavailable,
  [Code.DeadlineExceeded]: DeadlineExceeded,
  [Code.OutOfRange]: ResumeTokenExpired,
  [Code.Canceled]: Cancelled,
};

/** The typed error for anything a call threw, with the rich details (AIP-193) it carried. */
export function toAssayError(thrown: unknown): AssayError {
  if (thrown instanceof AssayError) {
    return thrown;
  }
  const err = ConnectError.from(thrown);
  const details: { reason?: string; metadata?: Record<string, string>; violations?: FieldViolation[] } = {};
  for (const info of err.findDetails(ErrorInfoSchema)) {
    details.reason = info.reason;
    details.metadata = { ...info.metadata };
  }
  for (const bad of err.findDetails(BadRequestSchema)) {
    details.violations = bad.fieldViolations.map((v) => ({ field: v.field, description: v.description }));
  }
  const Kind = BY_CODE[err.code] ?? AssayError;
  return new Kind(err.code, err.rawMessage, details, { cause: thrown });
}

/** `JobList`: ListJobs a page at a time, as jobs or as pages, up to an optional limit. */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import type { Job } from "./gen/assay/common/v1/job_pb.js";
import type { ListJobsResponse } from "./gen/assay/assessment/v1/assessment_service_pb.js";
import { ListJobsRequestSchema } from "./gen/assay/assessment/v1/assessment_service_pb.js";

/** The most jobs the service returns in one page. */
export const MAX_PAGE_SIZE = 100;

type ListJobsInit = MessageInitShape<typeof ListJobsRequestSchema>;

/**
 * The jobs a `list()` call names, fetched one page (one ListJobs call) at a time.
 *
 * `for await (const job of jobs)` yields the jobs; `for await (const page of jobs.pages())`
 * the replies themselves. With `limit`, no page asks for more jobs than are still wanted, so
 * the listing stops exactly at `limit` and `nextPageToken` (set once iteration ended) is where
 * the jobs not listed start: "" when there are none. Each iteration lists afresh from the
 * first page.
 */
export class JobList implements AsyncIterable<Job> {
  /** After iterating: the token of the jobs not listed (with a `limit`), else "". */
  nextPageToken = "";
  /** The most jobs to list (0: all). */
  readonly limit: number;
  private readonly pageSize: number;

  constructor(
    private readonly listJobs: (request: ListJobsInit) => Promise<ListJobsResponse>,
    private readonly request: ListJobsInit,
    options: { pageSize: number; limit: number },
  ) {
    this.pageSize = Math.max(1, Math.min(options.pageSize, MAX_PAGE_SIZE));
    this.limit = options.limit;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Job, void, undefined> {
    for await (const page of this.pages()) {
      yield* page.jobs;
    }
  }

  /** Each ListJobs reply in turn, until the last page or the `limit`. */
  async *pages(): AsyncGenerator<ListJobsResponse, void, undefined> {
    const request = create(ListJobsRequestSchema, this.request);
    let listed = 0;
    for (;;) {
      const wanted = this.limit ? this.limit - listed : this.pageSize;
      request.pageSize = Math.min(wanted, this.pageSize);
      const page = await this.listJobs(request);
      listed += page.jobs.length;
      this.nextPageToken = page.nextPageToken;
      yield page;
      if (!page.nextPageToken || (this.limit && listed >= this.limit)) {
        return;
      }
      request.pageToken = page.nextPageToken;
    }
  }
}

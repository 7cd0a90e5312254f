// A submission retried across an archive restart charges once: the archive stops, the
// submit's attempts fail (UNAVAILABLE) and are retried with the same request id until the
// archive is back; a repeat of the id then returns the same job.
import assert from "node:assert/strict";
import { test } from "node:test";
import { talentData } from "./data.js";
import { clientFor, fund, newUser, refusedSubmissions, stopArchive, waitUntil } from "./stack.js";

test("a submit retried across an archive restart charges once", async () => {
  const user = newUser();
  await fund(user, 5);
  // Attempts enough to outlast a process restart (the default gives up after about 2 s).
  await using assay = await clientFor(user, { retry: { maxAttempts: 100, maxBackoffMs: 500 }, timeoutMs: 60_000 });
  await assay.balance(); // connected before the archive goes
  const refusedBefore = await refusedSubmissions();
  const start = await stopArchive();
  const submitting = assay.submit(talentData(), { requestId: `once-${user}` });
  await waitUntil(async () => (await refusedSubmissions()) > refusedBefore, 10_000); // an attempt failed
  await start();
  const reply = await submitting; // retried, with the same id, until the archive answered
  const again = await assay.submit(talentData(), { requestId: `once-${user}` });
  assert.equal(again.job?.jobId, reply.job?.jobId);
  assert.equal((await assay.balance()).balance, 4n); // one charge for two calls and their retries
  const jobs = [];
  for await (const job of assay.list()) {
    jobs.push(job.jobId);
  }
  assert.deepEqual(jobs, [reply.job?.jobId]);
});

// @assay/client against a real stack: submissions with request ids, typed errors with their
// field violations, reads, paging up to a limit, and an AbortSignal on every call.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import {
  Cancelled,
  Code,
  DeadlineExceeded,
  FileToken,
  InvalidArgument,
  JobStatus,
  NotFound,
  Unauthenticated,
  Unavailable,
} from "@assay/client";
import { AssayClient } from "@assay/client";
import { talentData } from "./data.js";
import { clientFor, fund, newUser, scratch, stack, userToken } from "./stack.js";

test("submit, wait and read; a repeated request id charges once", async () => {
  const user = newUser();
  await fund(user, 3);
  await using assay = await clientFor(user);
  const reply = await assay.submit(talentData());
  assert.equal(reply.tokensRemaining, 2n);
  const jobId = reply.job?.jobId ?? "";
  const { job, result } = await assay.wait(jobId, { signal: AbortSignal.timeout(60_000) });
  assert.equal(job.status, JobStatus.COMPLETED);
  assert.ok(result?.testResult?.archetype);
  const again = await assay.submit(talentData(), { requestId: reply.job?.requestId ?? "" });
  assert.equal(again.job?.jobId, jobId);
  assert.deepEqual([(await assay.balance()).balance, (await assay.balance()).userId], [2n, user]);
  assert.equal((await assay.get(jobId)).status, JobStatus.COMPLETED);
  const byJob = await assay.result(jobId);
  assert.equal((await assay.result("", { resultId: byJob.resultId })).resultId, byJob.resultId);
});

test("errors are typed, with the contract's reason and field violations", async () => {
  const user = newUser();
  await fund(user, 1);
  await using assay = await clientFor(user);
  const hostile = talentData();
  (hostile.riasec as Record<string, number>).realistic = 101;
  await assert.rejects(assay.submit(hostile), (err: unknown) => {
    assert.ok(err instanceof InvalidArgument, String(err));
    assert.equal(err.code, Code.InvalidArgument);
    assert.ok(err.violations.some((v) => v.field.startsWith("assessment_data.")), JSON.stringify(err.violations));
    assert.equal(err.retryable, false);
    return true;
  });
  await assert.rejects(assay.get("00000000-0000-0000-0000-000000000000"), NotFound);
  await assay.submit(talentData());
  await assert.rejects(assay.submit(talentData()), (err: unknown) => {
    assert.ok(err instanceof Error && "reason" in err, String(err));
    assert.equal(err.reason, "INSUFFICIENT_TOKENS");
    return true;
  });
  await using stranger = new AssayClient({ assessmentAddr: stack().assessment, token: "not-a-token" });
  await assert.rejects(stranger.balance(), Unauthenticated);
});

test("list pages up to a limit, and goes on from its token", async () => {
  const user = newUser();
  await fund(user, 5);
  await using assay = await clientFor(user);
  const submitted = [];
  for (let i = 0; i < 5; i++) {
    submitted.push((await assay.submit(talentData())).job?.jobId ?? "");
  }
  const newestFirst = [...submitted].reverse();
  const pages = [];
  for await (const page of assay.list({ pageSize: 2 }).pages()) {
    pages.push(page.jobs.length);
  }
  assert.deepEqual(pages, [2, 2, 1]);
  const first = assay.list({ limit: 3, pageSize: 2 });
  const head = [];
  for await (const job of first) {
    head.push(job.jobId);
  }
  assert.deepEqual(head, newestFirst.slice(0, 3));
  assert.ok(first.nextPageToken);
  const rest = assay.list({ pageToken: first.nextPageToken });
  const tail = [];
  for await (const job of rest) {
    tail.push(job.jobId);
  }
  assert.deepEqual(tail, newestFirst.slice(3));
  assert.equal(rest.nextPageToken, "");
});

test("an AbortSignal ends a call and a watch", async () => {
  const user = newUser();
  await using assay = await clientFor(user);
  await assert.rejects(assay.balance("", { signal: AbortSignal.abort() }), Cancelled);
  const stop = new AbortController();
  const items = assay.watch({ snapshot: false, bookmarks: true, signal: stop.signal });
  const live = await items.next(); // the first bookmark: the watch is live
  assert.equal(live.value?.kind, "bookmark");
  const next = items.next();
  stop.abort();
  await assert.rejects(next, Cancelled);
});

test("reachable tells a dead address apart", async () => {
  await using assay = await clientFor(newUser());
  assert.equal(await assay.reachable(), true);
  assert.equal(await assay.reachable("notifier"), true);
  const port = await new Promise<number>((done) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => done(port)); // free now: nothing listens there
    });
  });
  await using nowhere = new AssayClient({ assessmentAddr: `127.0.0.1:${port}`, token: "t" });
  const started = Date.now();
  assert.equal(await nowhere.reachable("assessment", { withinMs: 30_000 }), false);
  assert.ok(Date.now() - started < 5_000, "it says so at the first failed attempt");
  await assert.rejects(nowhere.reachable("notifier"), /notifier/);
  await assert.rejects(assay.reachable("assessment", { signal: AbortSignal.abort() }), Cancelled);
  await assert.rejects(nowhere.balance(), Unavailable); // refused, and retried, then typed
});

test("a token file is read again when it changes", async () => {
  const user = newUser();
  await fund(user, 1);
  const file = join(await scratch(), "token");
  await writeFile(file, "expired-or-wrong\n");
  await using assay = await clientFor(user, { token: { file } });
  await assert.rejects(assay.balance(), Unauthenticated);
  await writeFile(file, `${await userToken(user)}\n`); // rotated, as the kubelet does
  assert.equal((await assay.balance()).balance, 1n);
  const source = new FileToken(file);
  assert.equal(await source.get(), (await readFile(file, "utf8")).trim());
  await using viaFunction = await clientFor(user, { token: async () => userToken(user) });
  assert.equal((await viaFunction.balance()).userId, user);
});

test("a submit that runs out of time is tried again with the same request id; one charge", async () => {
  const user = newUser();
  await fund(user, 2);
  const sent: string[] = [];
  // The first three attempts are held until their deadline passes (a server too slow for
  // the caller's deadline). A deadline of 1 ms instead could pass before an attempt was
  // sent at all: the client then fails it without sending, and fewer than three were seen.
  const slowFirstThree: Interceptor = (next) => async (req) => {
    if (req.method.name === "SubmitAssessment") {
      sent.push((req.message as { requestId?: string }).requestId ?? "");
      if (sent.length <= 3 && !req.signal.aborted) {
        await new Promise((resolve) => req.signal.addEventListener("abort", resolve, { once: true }));
      }
    }
    return next(req);
  };
  await using assay = await clientFor(user, { interceptors: [slowFirstThree] });
  await assert.rejects(assay.submit(talentData(), { timeoutMs: 200, attempts: 3 }), DeadlineExceeded);
  assert.equal(sent.length, 3);
  assert.equal(new Set(sent).size, 1); // every attempt with the id made for the call
  const reply = await assay.submit(talentData(), { requestId: sent[0] });
  const again = await assay.submit(talentData(), { requestId: sent[0] });
  assert.equal(again.job?.jobId, reply.job?.jobId);
  assert.equal((await assay.balance()).balance, 1n);
});

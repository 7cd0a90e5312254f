// Watches against a real stack: every transition once and in order across a link cut at
// random; a restarted subscriber resumes from its cursor store; an expired cursor relists
// with the gap marked.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { type AssayClient, FileCursorStore, JobStatus, type WatchItem } from "@assay/client";
import { talentData } from "./data.js";
import { Proxy } from "./proxy.js";
import { clientFor, fund, newUser, purgeEvents, scratch, stack, waitUntil } from "./stack.js";

async function take(items: AsyncGenerator<WatchItem, void, undefined>, count: number): Promise<WatchItem[]> {
  const taken: WatchItem[] = [];
  const timer = AbortSignal.timeout(30_000);
  for await (const item of items) {
    assert.ok(!timer.aborted, "the watch did not deliver in time");
    taken.push(item);
    if (taken.length === count) {
      break; // return() ends the stream
    }
  }
  return taken;
}

async function submitted(assay: AssayClient): Promise<string> {
  return (await assay.submit(talentData())).job?.jobId ?? "";
}

test("500 jobs through a link cut at random: each job's versions arrive 1..final, once, in order", async (t) => {
  const jobs = 500;
  const user = newUser("cuts");
  await fund(user, jobs + 1);
  const proxy = new Proxy(Number(stack().notifier.split(":").at(-1)));
  await proxy.start();
  await using assay = await clientFor(user, { notifierAddr: `127.0.0.1:${proxy.port}` });
  const seen: WatchItem[] = [];
  const stop = new AbortController();
  let live!: () => void;
  const isLive = new Promise<void>((resolve) => (live = resolve));
  const began = Date.now();
  const watching = (async () => {
    for await (const item of assay.watch({ signal: stop.signal })) {
      seen.push(item);
      live();
    }
  })().catch((err: unknown) => {
    if (!stop.signal.aborted) {
      throw err;
    }
  });
  const warmUp = await submitted(assay);
  await isLive; // the watch is live: nothing falls before it
  let cuts = 0;
  const all = new Set<string>();
  for (let i = 0; i < jobs; i++) {
    all.add(await submitted(assay));
    if (Math.random() < 0.05) {
      cuts += proxy.cut(); // a reset link, at random, while events flow
    }
  }
  await waitUntil(
    () => {
      cuts += proxy.cut(); // and again while the last events arrive
      const done = new Set(seen.filter((i) => i.status === JobStatus.COMPLETED).map((i) => i.jobId));
      return [...all].every((id) => done.has(id));
    },
    180_000,
    500,
  );
  stop.abort();
  await watching;
  const final = new Map<string, bigint>();
  for await (const job of assay.list({ status: JobStatus.COMPLETED })) {
    final.set(job.jobId, job.version);
  }
  await proxy.close();
  t.diagnostic(`${jobs} jobs, ${seen.length} items, ${cuts} connections cut, ${Date.now() - began} ms`);
  assert.ok(cuts >= 10, `the link was hardly cut (${cuts})`);
  const perJob = new Map<string, WatchItem[]>();
  for (const item of seen) {
    if (item.jobId !== warmUp) {
      assert.equal(item.kind, "event");
      perJob.set(item.jobId, [...(perJob.get(item.jobId) ?? []), item]);
    }
  }
  assert.deepEqual(new Set(perJob.keys()), all);
  for (const [jobId, changes] of perJob) {
    const versions = changes.map((c) => c.version);
    const expected = Array.from({ length: Number(final.get(jobId)) }, (_, i) => BigInt(i + 1));
    assert.deepEqual(versions, expected, jobId);
    assert.equal(changes[0]?.status, JobStatus.QUEUED, jobId);
    assert.equal(changes.at(-1)?.status, JobStatus.COMPLETED, jobId);
  }
});

test("a cursor store resumes a restarted subscriber", async () => {
  // The stack's worker runs: each job goes QUEUED, PROCESSING, COMPLETED as the watch goes.
  const user = newUser();
  await fund(user, 5);
  const store = new FileCursorStore(join(await scratch(), "cursor"));
  await using assay = await clientFor(user);
  const first = new Set([await submitted(assay), await submitted(assay)]);
  const watch = assay.watch({ cursorStore: store });
  const listed = [(await watch.next()).value, (await watch.next()).value];
  assert.deepEqual(new Set(listed.map((i) => `${i?.kind} ${i?.jobId}`)), new Set([...first].map((j) => `snapshot ${j}`)));
  const before = new Set(listed.map((i) => `${i?.jobId} ${i?.version}`));
  const third = await submitted(assay);
  let handling: WatchItem | undefined;
  for await (const item of watch) {
    before.add(`${item.jobId} ${item.version}`);
    if (item.jobId === third) {
      handling = item;
      break; // the subscriber stops while handling the third's first event
    }
  }
  assert.ok(handling);
  const later = [await submitted(assay), await submitted(assay)];
  const resumed: WatchItem[] = [];
  const queued = new Set<string>();
  for await (const item of assay.watch({ cursorStore: store, signal: AbortSignal.timeout(30_000) })) {
    resumed.push(item); // and starts again
    if (item.status === JobStatus.QUEUED && later.includes(item.jobId)) {
      queued.add(item.jobId);
    }
    if (queued.size === later.length) {
      break;
    }
  }
  // The item being handled at the stop comes again (at least once), then only what is new:
  // no listing again, nothing taken before repeated, and the later jobs' events.
  assert.equal(`${resumed[0]?.kind} ${resumed[0]?.jobId} ${resumed[0]?.version}`, `event ${third} ${handling.version}`);
  for (const item of resumed.slice(1)) {
    assert.equal(item.kind, "event");
    assert.ok(!before.has(`${item.jobId} ${item.version}`), `${item.jobId} ${item.version} came again`);
  }
});

test("an expired cursor relists and marks the gap", async () => {
  const user = newUser();
  await fund(user, 4);
  const store = new FileCursorStore(join(await scratch(), "cursor"));
  await using assay = await clientFor(user);
  await submitted(assay);
  const watch = assay.watch({ cursorStore: store });
  await watch.next(); // the snapshot
  await submitted(assay);
  await watch.next(); // an event: the cursor is kept
  await watch.return();
  await submitted(assay);
  await purgeEvents(); // past retention
  const fourth = await submitted(assay);
  const relisted = await take(assay.watch({ cursorStore: store }), 5);
  assert.equal(relisted[0]?.kind, "relisted");
  assert.deepEqual(relisted.slice(1).map((i) => i.kind), Array(4).fill("snapshot"));
  assert.ok(relisted.some((i) => i.jobId === fourth));
});

test("a cursor store that fails ends the watch with its error, not a reconnect", async () => {
  await using assay = await clientFor(newUser());
  const broken = {
    load: () => undefined,
    save: () => Promise.reject(new Error("disk full")),
  };
  const watch = assay.watch({ cursorStore: broken, snapshot: false }); // the first bookmark saves
  await assert.rejects(watch.next(), /disk full/);
});

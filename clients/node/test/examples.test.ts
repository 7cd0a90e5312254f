// The README's examples run: the subscriber sees the caller's job QUEUED, PROCESSING and
// COMPLETED, each once; the caller prints the job and its profile's archetype.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { promisify } from "node:util";
import { JobStatus } from "@assay/client";
import { talentData } from "./data.js";
import { clientFor, fund, newUser, scratch, stack, userToken } from "./stack.js";

const EXAMPLES = resolve(import.meta.dirname, "..", "examples");

test("the caller and subscriber examples run", async () => {
  const user = newUser();
  await fund(user, 2);
  await using assay = await clientFor(user);
  const first = (await assay.submit(talentData())).job?.jobId ?? "";
  const info = stack();
  const env = {
    ...process.env,
    ASSAY_ASSESSMENT_ADDR: info.assessment,
    ASSAY_NOTIFIER_ADDR: info.notifier,
    ASSAY_TOKEN: await userToken(user),
  };
  const cursor = join(await scratch(), "cursor");
  const subscriber = spawn(process.execPath, [join(EXAMPLES, "subscribe.js"), cursor], { env, stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: subscriber.stdout })[Symbol.asyncIterator]();
  try {
    const opening = await lines.next(); // the first job's snapshot: the watch is live
    assert.deepEqual(opening.value?.split(" ").slice(0, 2), ["now", first]);
    const { stdout } = await promisify(execFile)(process.execPath, [join(EXAMPLES, "submit-and-wait.js")], {
      env,
      timeout: 60_000,
    });
    const [jobId, status, archetype] = stdout.trim().split(/\s+/, 3);
    assert.equal(status, String(JobStatus.COMPLETED));
    assert.ok(archetype);
    const seen: string[][] = [];
    const timer = AbortSignal.timeout(30_000);
    while (seen.filter((line) => line[1] === jobId).length < 3) {
      assert.ok(!timer.aborted, `the subscriber printed only ${JSON.stringify(seen)}`);
      const next = await lines.next();
      assert.ok(!next.done, "the subscriber exited");
      seen.push(next.value.split(" "));
    }
    assert.deepEqual(
      seen.filter((line) => line[1] === jobId).map((line) => line.slice(0, 3)),
      [JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.COMPLETED].map((s) => ["event", jobId, String(s)]),
    );
  } finally {
    subscriber.kill("SIGTERM");
  }
  const code = subscriber.exitCode ?? (await once(subscriber, "exit"))[0];
  assert.equal(code, 0); // SIGTERM aborts the watch: the example ends cleanly
});

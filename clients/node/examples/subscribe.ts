// A subscriber: every status change of the caller's jobs, exactly once, across restarts.
//
// ASSAY_ASSESSMENT_ADDR=… ASSAY_NOTIFIER_ADDR=… ASSAY_TOKEN=… node dist/examples/subscribe.js CURSOR_FILE
import { AssayClient, FileCursorStore } from "@assay/client";

const assay = new AssayClient({
  assessmentAddr: process.env.ASSAY_ASSESSMENT_ADDR ?? "",
  notifierAddr: process.env.ASSAY_NOTIFIER_ADDR ?? "",
  token: process.env.ASSAY_TOKEN ?? "",
});
const stop = new AbortController();
process.once("SIGTERM", () => stop.abort()); // the watch then ends with Cancelled
try {
  for await (const item of assay.watch({ cursorStore: new FileCursorStore(process.argv[2] ?? "assay.cursor"), signal: stop.signal })) {
    if (item.kind === "relisted") {
      console.log("cursor expired: relisting"); // snapshots of the jobs follow
    } else if (item.kind === "snapshot") {
      console.log("now", item.jobId, item.status, item.version);
    } else {
      console.log("event", item.jobId, item.status, item.version);
    }
  }
} catch (err) {
  if (!stop.signal.aborted) {
    throw err;
  }
} finally {
  await assay.close();
}

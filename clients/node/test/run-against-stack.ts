// `npm test` (and `make test-node`): start a stack with `assay dev up` in a temporary state
// directory, run every test file with Node's test runner against it, and always take the
// stack down again — on success, failure, or Ctrl-C.
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VENV_BIN } from "./stack.js";

function runs(command: string, args: string[], env: NodeJS.ProcessEnv, stdout: "inherit" | "ignore" = "inherit"): Promise<number> {
  const child = spawn(command, args, { env, stdio: ["ignore", stdout, "inherit"] });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on("SIGINT", forward).on("SIGTERM", forward);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      process.off("SIGINT", forward).off("SIGTERM", forward);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

const assay = join(VENV_BIN, "assay");
const state = await mkdtemp(join(tmpdir(), "assay-node-stack-"));
// Any number of jobs in flight per user: one test queues 500 at once.
const env = { ...process.env, ASSAY_MAX_INFLIGHT_PER_USER: "0", ASSAY_TEST_STATE_DIR: state };
let code = 1;
try {
  code = await runs(assay, ["dev", "up", "--detach", "--json", "--state-dir", state], env, "ignore");
  if (code === 0) {
    const here = import.meta.dirname;
    const tests = (await readdir(here)).filter((name) => name.endsWith(".test.js")).map((name) => join(here, name));
    code = await runs(process.execPath, ["--test", "--test-concurrency=1", ...process.argv.slice(2), ...tests], env);
  } else {
    console.error(`assay dev up failed (exit ${code}); logs in ${join(state, "logs")}`);
  }
} finally {
  await runs(assay, ["dev", "down", "--state-dir", state], env, "ignore");
  if (code === 0) {
    await rm(state, { recursive: true, force: true });
  }
}
process.exit(code);

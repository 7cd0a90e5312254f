// `npm test` (and `make test-node`, after `npm run build`): start a stack with `assay dev up`
// in a temporary state directory while `tsc --noEmit` checks the sources, run every test file
// with Node's test runner against the stack, and always take it down again — on success,
// failure, or Ctrl-C.
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
const began = Date.now();
const seconds = (): string => `${((Date.now() - began) / 1000).toFixed(0)} s`;
let code = 1;
try {
  // `tsc --noEmit` under strict checks the sources while the stack starts.
  const tsc = join(import.meta.dirname, "..", "..", "node_modules", ".bin", "tsc");
  const [up, typed] = await Promise.all([
    runs(assay, ["dev", "up", "--detach", "--json", "--state-dir", state], env, "ignore"),
    runs(tsc, ["--noEmit", "-p", join(import.meta.dirname, "..", "..", "tsconfig.json")], env),
  ]);
  console.log(`# stack up and tsc --noEmit ${typed === 0 ? "clean" : "FAILED"} after ${seconds()}`);
  code = up || typed;
  if (up === 0 && typed === 0) {
    const here = import.meta.dirname;
    const tests = (await readdir(here)).filter((name) => name.endsWith(".test.js")).map((name) => join(here, name));
    code = await runs(process.execPath, ["--test", "--test-concurrency=1", ...process.argv.slice(2), ...tests], env);
  } else if (up !== 0) {
    console.error(`assay dev up failed (exit ${up}); logs in ${join(state, "logs")}`);
  }
} finally {
  console.log(`# tests done after ${seconds()}; taking the stack down`);
  await runs(assay, ["dev", "down", "--state-dir", state], env, "ignore");
  console.log(`# stack down after ${seconds()}`);
  if (code === 0) {
    await rm(state, { recursive: true, force: true });
  }
}
process.exit(code);

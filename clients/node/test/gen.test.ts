// The generated TypeScript (src/gen) is what `make gen` makes from protos/ now: regenerated
// into a temporary directory and compared file by file, as the Python side checks gen/.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { ROOT, scratch, VENV_BIN } from "./stack.js";

async function files(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath, entry.name);
      found.set(relative(dir, path), await readFile(path, "utf8"));
    }
  }
  return found;
}

test("the generated TypeScript is fresh", async () => {
  const fresh = await scratch();
  await promisify(execFile)(join(VENV_BIN, "python"), [join(ROOT, "tools", "gen_protos.py"), "--ts", fresh]);
  const committed = await files(join(ROOT, "clients", "node", "src", "gen"));
  const generated = await files(fresh);
  const stale = [...new Set([...committed.keys(), ...generated.keys()])].filter(
    (path) => committed.get(path) !== generated.get(path),
  );
  assert.deepEqual(stale, [], "clients/node/src/gen is stale; run `make gen`");
  assert.ok(generated.size > 0);
});

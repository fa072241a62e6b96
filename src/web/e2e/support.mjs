// Support for the editor's browser test (editor.e2e.mjs): its environment, the writeup-server
// it starts, and the numbered checks that leave a screenshot each.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const dist = path.resolve(here, "..", "dist");
export const serverBin = process.env.WRITEUP_SERVER_BIN;
export const modelDir = process.env.WRITEUP_MODEL_DIR;
export const artifacts = path.resolve(process.argv[2] ?? process.env.E2E_ARTIFACTS ?? path.join(here, "artifacts"));
if (!serverBin || !modelDir) {
  console.error("set WRITEUP_SERVER_BIN and WRITEUP_MODEL_DIR");
  process.exit(2);
}
if (!existsSync(path.join(dist, "index.html"))) {
  console.error(`${dist}/index.html is missing: run npm run build first`);
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** the main server: the model under two names; `extra` adds options (--api-key) */
export async function startServer(port, extra = ["--model", `tiny-gpt2-b=${modelDir}`]) {
  const child = spawn(serverBin, ["--port", String(port), "--model", `tiny-gpt2=${modelDir}`, ...extra, "--redis", "none", "--packed-cache", "off",
                                  "--log-level", "warn", "--static-dir", dist], { stdio: ["ignore", "inherit", "inherit"] });
  let spawnError = null;
  child.once("error", (e) => (spawnError = e));
  const end = Date.now() + 20000;
  while (Date.now() < end) {
    if (spawnError) throw new Error(`cannot start ${serverBin}: ${spawnError.message}`);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`writeup-server exited (${child.exitCode ?? child.signalCode}) before it was ready`);
    }
    try {
      const r = await fetch(`http://127.0.0.1:${port}/ready`);
      if (r.ok) return child;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGTERM");
  throw new Error("writeup-server did not become ready in 20 s");
}

export function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
}

let step = 0;
export async function check(name, page, fn) {
  step++;
  try {
    await fn();
    console.log(`ok ${step} - ${name}`);
  } catch (e) {
    console.log(`not ok ${step} - ${name}: ${e instanceof Error ? e.message : e}`);
    await page.screenshot({ path: path.join(artifacts, `failed-${step}.png`), fullPage: true }).catch(() => {});
    throw e;
  }
  await page.screenshot({ path: path.join(artifacts, `${String(step).padStart(2, "0")}-${name.replace(/\W+/g, "-")}.png`) });
}

/** A screenshot in the middle of a step (its state is gone by the step's end). */
export async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${String(step).padStart(2, "0")}-${name}.png`) });
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}


// End-to-end: the built editor (dist/) served by a real writeup-server with the tiny model, driven
// in Debian's chromium by playwright-core. Usage (after `npm run build`):
//   WRITEUP_SERVER_BIN=/path/to/writeup-server WRITEUP_MODEL_DIR=/path/to/tests/data/tiny-gpt2 \
//     node e2e/editor.e2e.mjs
// Optional: CHROMIUM=/usr/bin/chromium, E2E_ARTIFACTS=dir for the screenshots (default e2e/artifacts).
// Every wait is bounded; the process exits 1 on the first failed check.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, "..", "dist");
const serverBin = process.env.WRITEUP_SERVER_BIN;
const modelDir = process.env.WRITEUP_MODEL_DIR;
const artifacts = process.env.E2E_ARTIFACTS ?? path.join(here, "artifacts");
if (!serverBin || !modelDir) {
  console.error("set WRITEUP_SERVER_BIN and WRITEUP_MODEL_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startServer(port) {
  const child = spawn(serverBin, ["--port", String(port), "--model", `tiny-gpt2=${modelDir}`, "--redis", "none",
                                  "--log-level", "warn", "--static-dir", dist], { stdio: ["ignore", "inherit", "inherit"] });
  const end = Date.now() + 20000;
  while (Date.now() < end) {
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

function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
}

let step = 0;
async function check(name, page, fn) {
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

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const port = await freePort();
let server = await startServer(port);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
page.setDefaultTimeout(10000);
const consoleErrors = [];
const sentFrames = []; // what the page sent on its WebSockets, parsed
page.on("websocket", (ws) => ws.on("framesent", (f) => {
  try {
    sentFrames.push(JSON.parse(String(f.payload)));
  } catch {
    sentFrames.push({ unparsable: String(f.payload) });
  }
}));
const lastRequest = () => sentFrames.filter((f) => f.message_type === "new_request").at(-1);
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const url = `http://127.0.0.1:${port}/`;
const editor = page.getByTestId("editor");
const options = page.locator("#suggestion-list [role=option]");
const docText = () => editor.innerText();

let failed = false;
try {
  await page.goto(url);
  await check("page loads and connects", page, async () => {
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    await page.locator("[data-testid=model-picker] option[value=tiny-gpt2]").waitFor({ state: "attached" });
  });
  await check("typing brings streamed suggestions", page, async () => {
    await editor.click();
    await page.keyboard.type("It was a dark and stormy night ");
    await options.first().waitFor();
    const n = await options.count();
    assert(n >= 1 && n <= 3, `expected 1..3 suggestions, got ${n}`);
    await page.locator(".suggestion-meta", { hasText: "done" }).waitFor();
  });
  await check("arrow down and Enter insert the chosen suggestion", page, async () => {
    const before = await docText();
    const chosen = (await options.nth(0).innerText()).trim();
    await page.keyboard.press("ArrowDown");
    assert((await options.nth(0).getAttribute("aria-selected")) === "true", "first option not selected");
    await page.keyboard.press("Enter");
    const after = await docText();
    assert(after.startsWith(before.trimEnd()) && after.includes(chosen), `document does not hold the suggestion: ${JSON.stringify(after)}`);
    assert(await editor.evaluate((el) => el === document.activeElement || el.contains(document.activeElement)), "editor lost focus");
  });
  await check("a click inserts and undo takes it out", page, async () => {
    await page.keyboard.type(" ");
    await options.first().waitFor();
    await page.locator(".suggestion-meta", { hasText: "done" }).waitFor();
    const before = await docText();
    const chosen = (await options.nth(1).innerText()).trim();
    await options.nth(1).click();
    assert((await docText()).includes(chosen), "clicked suggestion not inserted");
    await page.keyboard.press("Control+z");
    assert((await docText()).trimEnd() === before.trimEnd(), `undo left ${JSON.stringify(await docText())}`);
  });
  await check("Esc dismisses", page, async () => {
    await page.keyboard.type(" the");
    await options.first().waitFor();
    await page.keyboard.press("Escape");
    await options.first().waitFor({ state: "detached" });
  });
  await check("a bad setting shows an error, not a suggestion", page, async () => {
    await page.getByLabel("Length (tokens)").fill("200");
    await editor.click();
    await page.keyboard.press("End");
    await page.keyboard.type(" x ");
    await page.getByRole("alert").filter({ hasText: "length" }).waitFor();
    assert((await options.count()) === 0, "an error became an option");
    await page.getByLabel("Length (tokens)").fill("12");
    await page.getByRole("alert").filter({ hasText: "length" }).waitFor({ state: "detached" });
  });
  await check("the model picker changes the model", page, async () => {
    await page.getByTestId("model-picker").selectOption("tiny-gpt2");
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(" model ");
    await options.first().waitFor();
    assert(lastRequest()?.model_name === "tiny-gpt2", `model_name not sent: ${JSON.stringify(lastRequest())}`);
    assert(lastRequest()?.length === 12 && lastRequest()?.batch_size === 3, "settings not sent");
  });
  await check("more like this asks again with a new seed", page, async () => {
    await page.locator(".suggestion-meta", { hasText: "done" }).waitFor();
    const before = sentFrames.length;
    await page.getByRole("button", { name: "More like this" }).click();
    await page.locator(".suggestion-meta", { hasText: "done" }).waitFor();
    const again = sentFrames.slice(before).find((f) => f.message_type === "new_request");
    assert(again && Number.isInteger(again.seed), `no new_request with a seed: ${JSON.stringify(sentFrames.slice(before))}`);
  });
  await check("reload keeps the document and the settings", page, async () => {
    const before = await docText();
    await page.reload();
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    assert((await docText()) === before, "document not kept");
    assert((await page.getByLabel("Length (tokens)").inputValue()) === "12", "settings not kept");
    assert((await page.getByTestId("model-picker").inputValue()) === "tiny-gpt2", "model not kept");
  });
  await check("phone-sized screen", page, async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(" on a phone ");
    await options.first().waitFor();
    await page.locator(".suggestion-meta", { hasText: "done" }).waitFor();
    const box = await options.first().boundingBox();
    assert(box !== null && box.x >= 0 && box.x + box.width <= 390, `suggestion outside the screen: ${JSON.stringify(box)}`);
  });
  await check("an emoji and a long document", page, async () => {
    await page.setViewportSize({ width: 1100, height: 800 });
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(" 😀 and ");
    await options.first().waitFor();
    await page.evaluate(() => localStorage.setItem("writeup.document.v1", "word ".repeat(4000) + "😀"));
    await page.reload();
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(" then ");
    await options.first().waitFor();
    assert((await page.getByTestId("word-count").innerText()).startsWith("4002"), "word count");
    assert(await options.first().isVisible(), "suggestions of a long document are off screen");
  });
  await check("a prompt window that would start inside an emoji", page, async () => {
    // "a" + 300 emoji + " and " is 606 UTF-16 units: the last 500 start on a low surrogate
    await page.evaluate(() => localStorage.setItem("writeup.document.v1", "a" + "\u{1F600}".repeat(300)));
    await page.reload();
    await editor.click();
    await page.keyboard.press("Control+End");
    await page.keyboard.type(" and ");
    await options.first().waitFor();
    const prompt = lastRequest()?.prompt ?? "";
    assert(prompt.length === 499 && prompt.startsWith("\u{1F600}") && prompt.endsWith("\u{1F600} and "),
           `prompt window ${JSON.stringify(prompt.slice(0, 8))}… (${prompt.length} units)`);
  });
  await check("dark theme", page, async () => {
    await page.emulateMedia({ colorScheme: "dark" });
    const bg = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    assert(bg === "rgb(23, 24, 27)", `dark background expected, got ${bg}`);
  });
  await check("reconnects after the server restarts", page, async () => {
    await stopServer(server);
    await page.getByTestId("connection").filter({ hasText: "Reconnecting" }).waitFor();
    server = await startServer(port);
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor({ timeout: 20000 });
    await page.keyboard.type(" again ");
    await options.first().waitFor();
  });
  assert(consoleErrors.length === 0, `page errors: ${consoleErrors.join("; ")}`);
} catch {
  failed = true;
} finally {
  await browser.close();
  await stopServer(server);
}
console.log(failed ? "FAILED" : "all passed");
process.exit(failed ? 1 : 0);

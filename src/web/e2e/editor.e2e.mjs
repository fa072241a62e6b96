// End-to-end: the built editor (dist/) served by a real writeup-server with the tiny model, driven
// in Debian's chromium by playwright-core. Usage (after `npm run build`):
//   WRITEUP_SERVER_BIN=/path/to/writeup-server WRITEUP_MODEL_DIR=/path/to/tests/data/tiny-gpt2 \
//     node e2e/editor.e2e.mjs
// Optional: CHROMIUM=/usr/bin/chromium, E2E_ARTIFACTS=dir for the screenshots (default e2e/artifacts;
// a first argument names it too). The server serves the model under two names (tiny-gpt2 and
// tiny-gpt2-b) so that changing the model is a real change. Every wait is bounded; the process
// exits 1 on the first failed check (and 2 when the environment is missing). A second, short server
// started with --api-key checks that the page asks for the key and works once it is entered.
import path from "node:path";

import { chromium } from "playwright-core";

import { artifacts, assert, check, freePort, shot, startServer, stopServer } from "./support.mjs";

const port = await freePort();
let server;
try {
  server = await startServer(port);
} catch (e) {
  console.log(`not ok 0 - start writeup-server: ${e.message}`);
  process.exit(1);
}
let browser;
try {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
} catch (e) {
  console.log(`not ok 0 - launch chromium: ${e instanceof Error ? e.message.split("\n")[0] : e}`);
  await stopServer(server);
  process.exit(1);
}
const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
page.setDefaultTimeout(10000);
const pageErrors = [];
const protocolWarnings = []; // the client's console.warn("writeup protocol: ...")
const sentFrames = []; // what the page sent on its WebSockets, parsed
const receivedFrames = []; // the "message" objects the server sent, parsed
const parse = (payload) => {
  try {
    return JSON.parse(String(payload));
  } catch {
    return { unparsable: String(payload) };
  }
};
page.on("websocket", (ws) => {
  ws.on("framesent", (f) => sentFrames.push(parse(f.payload)));
  ws.on("framereceived", (f) => receivedFrames.push(parse(f.payload).message ?? { unparsable: String(f.payload) }));
});
const requests = () => sentFrames.filter((f) => f.message_type === "new_request");
const lastRequest = () => requests().at(-1);
/** the frames answering a request (by its request_id) */
const answers = (request) => receivedFrames.filter((m) => request && m.request_id === request.request_id);
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("console", (m) => m.text().startsWith("writeup protocol") && protocolWarnings.push(m.text()));
const url = `http://127.0.0.1:${port}/`;
const editor = page.getByTestId("editor");
const options = page.locator("#suggestion-list [role=option]");
const meta = page.getByTestId("suggestion-meta");
const docText = () => editor.innerText();
const doneShown = () => meta.filter({ hasText: "done" }).waitFor();
/** types at the end of the document */
async function typeAtEnd(text) {
  await editor.click();
  await page.keyboard.press("Control+End");
  await page.keyboard.type(text);
}
/** waits until more than `count` new_requests were sent */
async function requestSent(count) {
  const end = Date.now() + 10000;
  while (requests().length <= count) {
    if (Date.now() > end) throw new Error(`no new_request after the ${count}th`);
    await page.waitForTimeout(20);
  }
}
/**
 * Waits until the last request has its completed_response (or a frame of `type`), and returns it.
 * With `promptEnd`, only a request whose prompt ends so counts (a slow machine may send one for
 * half-typed text first).
 */
async function completed(type = "completed_response", promptEnd = "") {
  const end = Date.now() + 10000;
  for (;;) {
    const request = lastRequest();
    const done = request?.prompt.endsWith(promptEnd) && answers(request).find((m) => m.message_type === type);
    if (done) return done;
    if (Date.now() > end) throw new Error(`no ${type} for ${JSON.stringify(lastRequest())}`);
    await page.waitForTimeout(50);
  }
}
/** stores the document (a string, or a function run in the page that stores it), then reloads */
async function setDocument(text) {
  if (typeof text === "function") await page.evaluate(text); // built in the page, so lone surrogates survive
  else await page.evaluate((t) => localStorage.setItem("writeup.document.v1", t), text);
  await page.reload();
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
}
const hasLoneSurrogate = (s) => /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

let failed = false;
let keyServer = null;
try {
  await page.goto(url);
  await check("page loads and connects", page, async () => {
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    for (const name of ["tiny-gpt2", "tiny-gpt2-b"]) {
      await page.locator(`[data-testid=model-picker] option[value=${name}]`).waitFor({ state: "attached" });
    }
  });
  await check("typing brings streamed suggestions", page, async () => {
    await editor.click();
    await page.keyboard.type("It was a dark and stormy night ");
    await options.first().waitFor();
    const n = await options.count();
    assert(n >= 1 && n <= 3, `expected 1..3 suggestions, got ${n}`);
    await doneShown();
    await completed("completed_response", "stormy night ");
    const request = lastRequest();
    assert(/^[A-Za-z0-9_.:-]{1,64}$/.test(request.request_id ?? ""), `new_request without a valid request_id: ${JSON.stringify(request)}`);
    const types = answers(request).map((m) => m.message_type);
    assert(types.at(-1) === "completed_response" && types.slice(0, -1).length >= 1 && types.slice(0, -1).every((t) => t === "updated_response"),
           `expected updated_responses then a completed_response for ${request.request_id}, got ${JSON.stringify(types)}`);
    const shown = (await options.allInnerTexts()).map((t) => t.trim());
    const last = answers(request).at(-1);
    const texts = Object.keys(last).filter((k) => k.startsWith("text_")).map((k) => last[k].trim()).filter((t) => t);
    assert(JSON.stringify(shown) === JSON.stringify(texts), `shown ${JSON.stringify(shown)} != completed ${JSON.stringify(texts)}`);
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
    await doneShown();
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
    await typeAtEnd(" x ");
    const alert = page.getByRole("alert").filter({ hasText: "length" });
    await alert.waitFor();
    assert((await options.count()) === 0, "an error became an option");
    const error = await completed("error");
    assert(error.error?.field === "length", `error frame: ${JSON.stringify(error)}`);
    await shot(page, "error-shown");
    await page.getByLabel("Length (tokens)").fill("12");
    await alert.waitFor({ state: "detached" });
  });
  await check("change model and settings", page, async () => {
    await page.getByTestId("model-picker").selectOption("tiny-gpt2-b");
    await page.getByLabel("Number of suggestions").fill("2");
    await page.getByLabel("Temperature").fill("0.9");
    await page.getByLabel("Top k (0 = off)").fill("20");
    await page.getByLabel("Top p (0 = off)").fill("0.9");
    await typeAtEnd(" model ");
    await options.first().waitFor();
    const done = await completed("completed_response", " model ");
    const r = lastRequest();
    const want = { model_name: "tiny-gpt2-b", length: 12, batch_size: 2, temperature: 0.9, top_k: 20, top_p: 0.9 };
    for (const [k, v] of Object.entries(want)) assert(r?.[k] === v, `${k}: sent ${JSON.stringify(r?.[k])}, want ${v}`);
    assert(done.model_name === "tiny-gpt2-b", `answered by ${done.model_name}`);
    await doneShown();
    assert((await options.count()) <= 2 && !("text_2" in done), "more suggestions than asked for");
  });
  await check("the same text with a fixed seed comes from the cache", page, async () => {
    await page.getByLabel(/^Seed/).fill("42");
    await typeAtEnd(" cached ");
    const first = await completed("completed_response", " cached ");
    const firstRequest = lastRequest();
    await doneShown();
    assert(lastRequest().seed === 42, `seed not sent: ${JSON.stringify(lastRequest())}`);
    assert(first.cache === "miss", `first ask: cache ${JSON.stringify(first.cache)}, want "miss"`);
    assert((await meta.locator(".cache-badge").count()) === 0, "a miss shows a cache badge");
    const firstTexts = await options.allInnerTexts();
    // the same text again: take the space out and put it back
    await page.keyboard.press("Backspace");
    await page.keyboard.type(" ");
    await meta.locator(".cache-badge", { hasText: "from cache" }).waitFor();
    await completed("completed_response", " cached ");
    const again = lastRequest();
    assert(again.request_id !== firstRequest.request_id && again.prompt === firstRequest.prompt, "not asked again with the same prompt");
    const frames = answers(again);
    assert(frames.length === 1 && frames[0].message_type === "completed_response" && frames[0].cache === "hit",
           `a hit is one completed_response with cache "hit": ${JSON.stringify(frames.map((f) => [f.message_type, f.cache]))}`);
    assert(JSON.stringify(await options.allInnerTexts()) === JSON.stringify(firstTexts), "the cached suggestions differ");
    assert(/first words \d+ ms, done \d+ ms/.test(await meta.innerText()), `latency not shown with the badge: ${await meta.innerText()}`);
  });
  await check("more like this asks again with a new seed", page, async () => {
    const before = requests().length;
    await page.getByRole("button", { name: "More like this" }).click();
    await requestSent(before);
    const done = await completed();
    await doneShown();
    const again = requests().slice(before)[0];
    assert(again && Number.isInteger(again.seed) && again.seed !== 42, `no new_request with a new seed: ${JSON.stringify(again)}`);
    assert(done.cache !== "hit", "a new seed came from the cache");
  });
  await check("reload keeps the document and the settings", page, async () => {
    const before = await docText();
    await page.reload();
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    assert((await docText()) === before, "document not kept");
    assert((await page.getByLabel("Length (tokens)").inputValue()) === "12", "length not kept");
    assert((await page.getByLabel("Number of suggestions").inputValue()) === "2", "number of suggestions not kept");
    assert((await page.getByLabel(/^Seed/).inputValue()) === "42", "seed not kept");
    assert((await page.getByTestId("model-picker").inputValue()) === "tiny-gpt2-b", "model not kept");
  });
  await check("a lone surrogate in the document is sent well-formed", page, async () => {
    await setDocument(() => localStorage.setItem("writeup.document.v1",
      "a lone " + String.fromCharCode(0xd800) + " surrogate and a " + String.fromCharCode(0xde00) + " low one"));
    const stored = await page.evaluate(() => [...localStorage.getItem("writeup.document.v1")].filter((c) => c.length === 1 && /[\ud800-\udfff]/.test(c)).length);
    assert(stored === 2, `the document does not hold the two lone surrogates (${stored})`);
    await typeAtEnd(" then ");
    await options.first().waitFor();
    await completed("completed_response", " then ");
    const prompt = lastRequest()?.prompt ?? "";
    assert(!hasLoneSurrogate(prompt) && prompt.includes("lone \ufffd surrogate and a \ufffd low one then "), `prompt ${JSON.stringify(prompt)}`);
  });
  await check("an emoji and a very long document", page, async () => {
    await typeAtEnd(" 😀 and ");
    await options.first().waitFor();
    await completed("completed_response", "😀 and ");
    await setDocument("word ".repeat(4000) + "😀");
    await typeAtEnd(" then ");
    await options.first().waitFor();
    await completed("completed_response", " then ");
    assert((await page.getByTestId("word-count").innerText()).startsWith("4002"), "word count");
    assert(lastRequest().prompt.length <= 500, "the prompt is not the document's last 500 characters");
    assert(await options.first().isVisible(), "suggestions of a long document are off screen");
    await page.keyboard.press("Tab");
    assert((await docText()).length > 20000, "long document lost");
  });
  await check("a prompt window that would start inside an emoji", page, async () => {
    // "a" + 300 emoji + " and " is 606 UTF-16 units: the last 500 start on a low surrogate
    await setDocument("a" + "\u{1F600}".repeat(300));
    await typeAtEnd(" and ");
    await options.first().waitFor();
    await completed("completed_response", " and ");
    const prompt = lastRequest()?.prompt ?? "";
    assert(prompt.length === 499 && prompt.startsWith("\u{1F600}") && prompt.endsWith("\u{1F600} and "),
           `prompt window ${JSON.stringify(prompt.slice(0, 8))}… (${prompt.length} units)`);
  });
  await check("phone-sized screen", page, async () => {
    await setDocument("It was a dark and stormy night on a small screen");
    await page.setViewportSize({ width: 390, height: 844 });
    await typeAtEnd(" and ");
    await options.first().waitFor();
    await doneShown();
    const box = await options.first().boundingBox();
    assert(box !== null && box.x >= 0 && box.x + box.width <= 390, `suggestion outside the screen: ${JSON.stringify(box)}`);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert(width <= 390, `the page scrolls sideways (${width} px wide)`);
    // near the cursor: above where an on-screen keyboard would cover the screen
    assert(box.y < 844 * 0.55, `the suggestions start too far down (${Math.round(box.y)} px)`);
    const metaBox = await meta.boundingBox();
    assert(metaBox !== null && metaBox.y + metaBox.height <= 844, "the suggestions' latency line is below the screen");
  });
  await check("dark theme", page, async () => {
    await page.setViewportSize({ width: 1100, height: 800 });
    await page.emulateMedia({ colorScheme: "dark" });
    await typeAtEnd("the ");
    await options.first().waitFor();
    await doneShown();
    const colors = await page.evaluate(() => {
      const css = (sel, prop) => getComputedStyle(document.querySelector(sel))[prop];
      return { page: css("html", "backgroundColor"), editor: css(".editable", "backgroundColor"), list: css(".suggestion-list", "backgroundColor"),
               option: css(".suggestion", "color"), input: css(".settings input", "backgroundColor") };
    });
    assert(colors.page === "rgb(23, 24, 27)", `dark background expected, got ${colors.page}`);
    const dark = (c) => c.match(/\d+/g).slice(0, 3).every((v) => Number(v) < 60);
    for (const k of ["editor", "list", "input"]) assert(dark(colors[k]), `${k} is not dark: ${colors[k]}`);
    assert(!dark(colors.option), `suggestion text is dark on dark: ${colors.option}`);
  });
  await check("reconnects after the server restarts", page, async () => {
    await page.emulateMedia({ colorScheme: "light" });
    await stopServer(server);
    await page.getByTestId("connection").filter({ hasText: "Reconnecting" }).waitFor();
    // typed while the server is down: asked once it is back, without typing again
    const before = requests().length;
    await typeAtEnd(" again ");
    await page.getByText("Waiting for the server…").waitFor();
    await shot(page, "reconnecting");
    server = await startServer(port);
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor({ timeout: 20000 });
    await options.first().waitFor();
    await requestSent(before);
    assert(lastRequest().prompt.endsWith(" again "), `asked ${JSON.stringify(lastRequest().prompt.slice(-20))} after reconnecting`);
    await completed();
  });
  await check("no page errors, every frame answers a request the page sent", page, async () => {
    assert(pageErrors.length === 0, `page errors: ${pageErrors.join("; ")}`);
    assert(protocolWarnings.length === 0, `protocol warnings: ${protocolWarnings.join("; ")}`);
    const ids = new Set(requests().map((r) => r.request_id));
    assert(ids.size === requests().length, "a request_id was sent twice");
    const strangers = receivedFrames.filter((m) => !ids.has(m.request_id));
    assert(strangers.length === 0, `frames for no request the page sent: ${JSON.stringify(strangers.slice(0, 3))}`);
  });
  await check("screenshot for the README", page, async () => {
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.evaluate(() => localStorage.setItem("writeup.settings.v1", JSON.stringify({ model: "tiny-gpt2", length: 16, seed: 3 })));
    await setDocument("The lighthouse keeper had not seen a ship in eleven days. On the twelfth morning the fog lifted, "
                      + "and far out past the reef something long and grey was moving against the tide.\n\nShe put down her cup and");
    await typeAtEnd(" ");
    await options.first().waitFor();
    await doneShown();
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    await page.screenshot({ path: path.join(artifacts, "editor.png") });
  });
  // a server that needs an API key: a fresh page (its own origin, so no stored settings)
  const apiKey = "e2e-key-7f3a";
  const keyPort = await freePort();
  keyServer = await startServer(keyPort, ["--api-key", apiKey]);
  const keyPage = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  keyPage.setDefaultTimeout(10000);
  const keyPageErrors = [];
  const keySent = [];
  const keyReceived = [];
  const modelsAuth = []; // the Authorization header of each GET /v1/models ("" = none)
  keyPage.on("pageerror", (e) => keyPageErrors.push(String(e)));
  keyPage.on("websocket", (ws) => {
    ws.on("framesent", (f) => keySent.push(parse(f.payload)));
    ws.on("framereceived", (f) => keyReceived.push(parse(f.payload).message ?? { unparsable: String(f.payload) }));
  });
  keyPage.on("request", (r) => new URL(r.url()).pathname === "/v1/models" && modelsAuth.push(r.headers().authorization ?? ""));
  const keyRequests = () => keySent.filter((f) => f.message_type === "new_request");
  /** the answer of `type` to the last new_request (whose prompt ends with `promptEnd`) */
  async function keyAnswer(type, promptEnd = "") {
    const end = Date.now() + 10000;
    for (;;) {
      const r = keyRequests().at(-1);
      const done = r?.prompt.endsWith(promptEnd) && keyReceived.find((m) => m.request_id === r.request_id && m.message_type === type);
      if (done) return { request: r, frame: done };
      if (Date.now() > end) throw new Error(`no ${type} for ${JSON.stringify(r)}`);
      await keyPage.waitForTimeout(50);
    }
  }
  const keyEditor = keyPage.getByTestId("editor");
  const keyOptions = keyPage.locator("#suggestion-list [role=option]");
  const keyField = keyPage.locator("#api-key");
  const settingsKeyError = keyPage.getByTestId("api-key-error");
  const suggestionsKeyError = keyPage.locator(".suggestions [role=alert]");
  await keyPage.goto(`http://127.0.0.1:${keyPort}/`);
  await check("a server with an API key: the page loads and asks for the key", keyPage, async () => {
    await keyPage.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    await settingsKeyError.filter({ hasText: "This server needs an API key" }).waitFor();
    assert(modelsAuth.length >= 1 && modelsAuth.every((a) => a === ""), `GET /v1/models sent a key: ${JSON.stringify(modelsAuth)}`);
    assert((await keyField.getAttribute("type")) === "password" && (await keyField.getAttribute("autocomplete")) === "off", "the key field is not a password field");
    assert((await keyPage.locator("[data-testid=model-picker] option[value=tiny-gpt2]").count()) === 0, "models listed without the key");
    await keyEditor.click();
    await keyPage.keyboard.type("The keeper climbed the stairs ");
    const { request, frame } = await keyAnswer("error", "stairs ");
    assert(!("api_key" in request), `a request without a key sent api_key: ${JSON.stringify(request)}`);
    assert(frame.error?.code === "missing_api_key", `error frame: ${JSON.stringify(frame)}`);
    await suggestionsKeyError.filter({ hasText: "This server needs an API key" }).waitFor();
    assert((await keyOptions.count()) === 0, "the key error became a suggestion");
    await keyPage.screenshot({ path: path.join(artifacts, "api-key-asked.png") });
  });
  await check("a wrong key typed into the settings is refused", keyPage, async () => {
    await suggestionsKeyError.getByRole("button", { name: "Enter the key" }).click();
    assert(await keyField.evaluate((el) => el === document.activeElement), "Enter the key did not focus the key field");
    const before = keyRequests().length;
    await keyPage.keyboard.type("wrong");
    // asked again without more writing, and the models list too
    await settingsKeyError.filter({ hasText: "did not accept this API key" }).waitFor();
    const { request, frame } = await keyAnswer("error", "stairs ");
    assert(keyRequests().length > before && request.api_key === "wrong", `not asked again with the key: ${JSON.stringify(request)}`);
    assert(frame.error?.code === "invalid_api_key", `error frame: ${JSON.stringify(frame)}`);
    await suggestionsKeyError.filter({ hasText: "did not accept this API key" }).waitFor();
    assert(modelsAuth.at(-1) === "Bearer wrong", `GET /v1/models sent ${JSON.stringify(modelsAuth.at(-1))}`);
  });
  await check("the right key brings the models and streamed suggestions", keyPage, async () => {
    await keyField.focus();
    await keyPage.keyboard.press("Control+a");
    await keyPage.keyboard.type(apiKey);
    await keyPage.locator("[data-testid=model-picker] option[value=tiny-gpt2]").waitFor({ state: "attached" });
    await settingsKeyError.waitFor({ state: "detached" });
    assert(modelsAuth.at(-1) === `Bearer ${apiKey}`, `GET /v1/models sent ${JSON.stringify(modelsAuth.at(-1))}`);
    await keyOptions.first().waitFor();
    const { request } = await keyAnswer("completed_response", "stairs ");
    assert(request.api_key === apiKey, `the request carries ${JSON.stringify(request.api_key)}`);
    const types = keyReceived.filter((m) => m.request_id === request.request_id).map((m) => m.message_type);
    assert(types.length >= 2 && types.at(-1) === "completed_response" && types.slice(0, -1).every((t) => t === "updated_response"),
           `expected updated_responses then a completed_response, got ${JSON.stringify(types)}`);
    await keyPage.getByTestId("suggestion-meta").filter({ hasText: "done" }).waitFor();
    assert((await suggestionsKeyError.count()) === 0, "a key error is still shown");
    await keyPage.screenshot({ path: path.join(artifacts, "api-key-entered.png") });
  });
  await check("the key is kept across a reload and sent with every request", keyPage, async () => {
    await keyPage.reload();
    await keyPage.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    assert((await keyField.inputValue()) === apiKey, "the key was not kept");
    await keyPage.locator("[data-testid=model-picker] option[value=tiny-gpt2]").waitFor({ state: "attached" });
    await keyEditor.click();
    await keyPage.keyboard.press("Control+End");
    await keyPage.keyboard.type(" and ");
    await keyOptions.first().waitFor();
    const { request } = await keyAnswer("completed_response", " and ");
    assert(request.api_key === apiKey, `the request carries ${JSON.stringify(request.api_key)}`);
    assert(keyPageErrors.length === 0, `page errors: ${keyPageErrors.join("; ")}`);
    const ids = new Set(keyRequests().map((r) => r.request_id));
    const strangers = keyReceived.filter((m) => !ids.has(m.request_id));
    assert(strangers.length === 0, `frames for no request the page sent: ${JSON.stringify(strangers.slice(0, 3))}`);
  });
} catch {
  failed = true;
} finally {
  await browser.close();
  await stopServer(server);
  if (keyServer) await stopServer(keyServer);
}
console.log(failed ? "FAILED" : "all passed");
process.exit(failed ? 1 : 0);

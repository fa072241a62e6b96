// The official OpenAI Node SDK (npm `openai`, 6.x) against the real writeup-server: what a user
// of the SDK does, and what the SDK itself checks (typed errors, stream parsing, pagination).
//   WRITEUP_SERVER_BIN=build/writeup-server node --test tests/node/openai_sdk.test.mjs
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { startServer, tinyModel } from './server.mjs';

const KEY = 'sk-writeup-node-test';
const MODEL = 'tiny-gpt2';
const PROMPT = 'The quick brown fox';

let server;
let client;

before(async () => {
  server = await startServer({ server: { api_keys: [KEY] }, models: [tinyModel({ aliases: ['tiny-alias'] })] });
  client = new OpenAI({ apiKey: KEY, baseURL: server.url + '/v1', maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  assert.equal(await server?.stop(), 0);
});

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

// Each choice's streamed text, by index.
function streamedTexts(chunks) {
  const texts = {};
  for (const chunk of chunks) {
    for (const choice of chunk.choices) texts[choice.index] = (texts[choice.index] ?? '') + (choice.text ?? '');
  }
  return texts;
}

describe('completions', () => {
  test('greedy: text, usage and finish_reason; streaming gives the same text', async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 8, temperature: 0 };
    const c = await client.completions.create(body);
    assert.equal(c.object, 'text_completion');
    assert.equal(c.model, MODEL);
    assert.equal(c.choices.length, 1);
    assert.ok(c.choices[0].text.length > 0);
    assert.ok(['length', 'stop'].includes(c.choices[0].finish_reason));
    assert.ok(c.usage.prompt_tokens > 0);
    assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);

    const chunks = await collect(await client.completions.create({ ...body, stream: true }));
    assert.equal(streamedTexts(chunks)[0], c.choices[0].text);
    assert.equal(chunks.at(-1).choices[0].finish_reason, c.choices[0].finish_reason);
  });

  test('logprobs: one entry per token, the text is the tokens joined, top alternatives', async () => {
    const c = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 3 });
    const lp = c.choices[0].logprobs;
    assert.equal(lp.tokens.length, c.usage.completion_tokens);
    assert.equal(lp.tokens.join(''), c.choices[0].text);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset.length, lp.tokens.length);
    for (let i = 0; i < lp.tokens.length; ++i) {
      assert.ok(lp.token_logprobs[i] <= 0, `logprob ${lp.token_logprobs[i]}`);
      const top = lp.top_logprobs[i];
      assert.equal(Object.keys(top).length, 3);
      // Greedy: the chosen token is the most likely one.
      const best = Math.max(...Object.values(top));
      assert.ok(Math.abs(best - lp.token_logprobs[i]) < 1e-4, `${best} vs ${lp.token_logprobs[i]}`);
      if (i > 0) assert.equal(lp.text_offset[i], lp.text_offset[i - 1] + lp.tokens[i - 1].length);
    }
  });

  test('logprobs streaming: every chunk carries the logprobs of its own text', async () => {
    const stream = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 1, stream: true,
    });
    let text = '';
    let tokens = '';
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        text += choice.text;
        if (choice.logprobs) tokens += choice.logprobs.tokens.join('');
      }
    }
    assert.ok(text.length > 0);
    assert.equal(tokens, text);
  });

  test('echo: the prompt comes first, streaming or not; with logprobs the first token has none', async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 4, temperature: 0, echo: true };
    const c = await client.completions.create(body);
    assert.ok(c.choices[0].text.startsWith(PROMPT), c.choices[0].text);
    const chunks = await collect(await client.completions.create({ ...body, stream: true }));
    assert.equal(streamedTexts(chunks)[0], c.choices[0].text);

    const withLogprobs = await client.completions.create({ ...body, logprobs: 1 });
    const lp = withLogprobs.choices[0].logprobs;
    assert.equal(lp.tokens.join(''), withLogprobs.choices[0].text);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.text_offset[0], 0);
    assert.ok(lp.token_logprobs.slice(1).every((x) => typeof x === 'number' && x <= 0));
  });

  test('n sequences, and the same seed gives the same texts', async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 8, temperature: 1, n: 3, seed: 7 };
    const a = await client.completions.create(body);
    const b = await client.completions.create(body);
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
    assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  });

  test('unseeded sampling requests differ', async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 16, temperature: 1 };
    const texts = new Set();
    for (let i = 0; i < 3; ++i) texts.add((await client.completions.create(body)).choices[0].text);
    assert.ok(texts.size > 1, [...texts].join(' | '));
  });

  test('prompt arrays: strings, token ids and token-id lists; index = prompt_i * n + j', async () => {
    const prompts = ['Once upon a time', 'In a galaxy far away'];
    const body = { model: MODEL, max_tokens: 5, temperature: 1, seed: 11, n: 2 };
    const c = await client.completions.create({ ...body, prompt: prompts });
    assert.equal(c.choices.length, 4);
    assert.deepEqual(c.choices.map((x) => x.index).sort(), [0, 1, 2, 3]);
    const byIndex = Object.fromEntries(c.choices.map((x) => [x.index, x.text]));
    for (let p = 0; p < prompts.length; ++p) {
      const single = await client.completions.create({ ...body, prompt: prompts[p] });
      for (let j = 0; j < 2; ++j) assert.equal(byIndex[p * 2 + j], single.choices[j].text, `prompt ${p} choice ${j}`);
    }

    const ids = (await (await fetch(server.url + '/v1/tokenize', {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, prompt: prompts[0] }),
    })).json()).tokens;
    const fromIds = await client.completions.create({ ...body, n: 1, prompt: ids });
    const fromText = await client.completions.create({ ...body, n: 1, prompt: prompts[0] });
    assert.equal(fromIds.choices[0].text, fromText.choices[0].text);
    const fromLists = await client.completions.create({ ...body, n: 1, prompt: [ids, ids] });
    assert.deepEqual(fromLists.choices.map((x) => x.text), [fromText.choices[0].text, fromText.choices[0].text]);

    const stream = await client.completions.create({ ...body, prompt: prompts, stream: true });
    const streamed = streamedTexts(await collect(stream));
    assert.deepEqual(streamed, byIndex);
  });

  test('stop: the text ends before the stop string', async () => {
    const body = { model: MODEL, prompt: PROMPT, max_tokens: 16, temperature: 0 };
    const full = (await client.completions.create(body)).choices[0].text;
    const stop = full.slice(4, 7);
    assert.ok(stop.length === 3, `greedy text too short: ${JSON.stringify(full)}`);
    const c = await client.completions.create({ ...body, stop: [stop] });
    assert.equal(c.choices[0].text, full.slice(0, full.indexOf(stop)));
    assert.equal(c.choices[0].finish_reason, 'stop');
  });

  test('stream_options.include_usage: a last chunk with usage and no choices', async () => {
    const chunks = await collect(await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true },
    }));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, 5);
  });

  test('standard fields at their defaults are accepted', async () => {
    const c = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 3, temperature: 0, suffix: null, best_of: 1, logit_bias: {}, user: 'u1',
    });
    assert.equal(c.choices.length, 1);
  });

  test('logit_bias steers greedy decoding', async () => {
    const c = await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 3, temperature: 0, logit_bias: { 13: 100 }, logprobs: 0,
    });
    assert.equal(c.choices[0].text, '...');  // token 13 is "."
  });
});

describe('errors are the SDK typed errors', () => {
  test('400 BadRequestError names the parameter', async () => {
    await assert.rejects(client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: -1 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.status, 400);
      assert.equal(e.param, 'max_tokens');
      return true;
    });
  });

  test('401 AuthenticationError', async () => {
    const wrong = new OpenAI({ apiKey: 'sk-wrong', baseURL: server.url + '/v1', maxRetries: 0 });
    await assert.rejects(wrong.completions.create({ model: MODEL, prompt: PROMPT }), OpenAI.AuthenticationError);
    await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
  });

  test('404 NotFoundError for an unknown model', async () => {
    await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: PROMPT }), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
      assert.equal(e.code, 'model_not_found');
      return true;
    });
    await assert.rejects(client.models.retrieve('no-such-model'), OpenAI.NotFoundError);
  });

  test('429 RateLimitError when the queue is full, streaming or not, with the cache on', async () => {
    // One sequence slot, a queue of one and a slow engine: two long requests fill it.
    const busy = await startServer(
      { models: [tinyModel({ max_batch: 1 })], limits: { max_queue: 1, max_batch_size: 1 } },
      { WRITEUP_TEST_STEP_DELAY_MS: '50' },
    );
    try {
      const slow = new OpenAI({ apiKey: 'unused', baseURL: busy.url + '/v1', maxRetries: 0 });
      const running = [];
      for (const i of [0, 1]) {
        // The first is admitted (running) before the second queues.
        running.push(slow.completions.create({ model: MODEL, prompt: 'Keep busy', max_tokens: 60, seed: 100 + i }));
        running.at(-1).catch(() => {});
        await new Promise((r) => setTimeout(r, 300));
      }
      // Wait until one runs and one waits.
      for (let tries = 0; ; ++tries) {
        const metrics = await (await fetch(busy.url + '/metrics')).text();
        const m = metrics.match(/^writeup_generations_total\{[^}]*\} (\d+)/m);
        if (m && Number(m[1]) >= 2) break;
        assert.ok(tries < 200, 'the two slow requests never started');
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const stream of [false, true]) {
        await assert.rejects(
          slow.completions.create({ model: MODEL, prompt: `Refused ${stream}`, max_tokens: 5, seed: 1, stream }),
          (e) => {
            assert.ok(e instanceof OpenAI.RateLimitError, `${stream}: ${e.constructor.name} ${e.message}`);
            assert.equal(e.headers.get('retry-after'), '1');
            return true;
          },
        );
      }
      await Promise.all(running);
    } finally {
      assert.equal(await busy.stop(), 0);
    }
  });
});

describe('models', () => {
  test('list (auto-paginated) and retrieve, aliases included', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, [MODEL]);
    const m = await client.models.retrieve(MODEL);
    assert.equal(m.id, MODEL);
    assert.equal(m.object, 'model');
    assert.ok(m.created > 1_600_000_000, `created ${m.created}`);
    const byAlias = await client.completions.create({ model: 'tiny-alias', prompt: PROMPT, max_tokens: 3, temperature: 0 });
    const byName = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 3, temperature: 0 });
    assert.equal(byAlias.choices[0].text, byName.choices[0].text);
  });
});

describe('chat completions', () => {
  const messages = [
    { role: 'system', content: 'You are a writer.' },
    { role: 'user', content: 'Write a line.' },
  ];

  test('not streaming: one assistant message', async () => {
    const c = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, temperature: 0 });
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.role, 'assistant');
    assert.equal(typeof c.choices[0].message.content, 'string');
    assert.ok(['length', 'stop'].includes(c.choices[0].finish_reason));
    assert.ok(c.usage.prompt_tokens > 0);
  });

  test('streaming: deltas add up to the same message', async () => {
    const body = { model: MODEL, messages, max_tokens: 6, temperature: 0 };
    const whole = await client.chat.completions.create(body);
    const chunks = await collect(await client.chat.completions.create({ ...body, stream: true }));
    assert.equal(chunks[0].object, 'chat.completion.chunk');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(content, whole.choices[0].message.content);
  });

  test('a bad message is a BadRequestError', async () => {
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [] }), OpenAI.BadRequestError);
  });
});

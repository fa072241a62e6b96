// Starts the real writeup-server (WRITEUP_SERVER_BIN) on a free loopback port with a config
// file, for the Node tests. Resolves once /ready answers 200.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const START_TIMEOUT_MS = Number(process.env.WRITEUP_START_TIMEOUT_S ?? 60) * 1000;

export const DATA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'data');

export async function startServer(config, env = {}) {
  const bin = process.env.WRITEUP_SERVER_BIN;
  if (!bin) throw new Error('WRITEUP_SERVER_BIN must name the writeup-server binary');
  const dir = mkdtempSync(path.join(tmpdir(), 'writeup-node-'));
  const file = path.join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config));
  const proc = spawn(bin, ['--host', '127.0.0.1', '--port', '0', '--log-level', 'warn', '--config', file], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const output = [];
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line in ${START_TIMEOUT_MS} ms: ${output.join('')}`)), START_TIMEOUT_MS);
    const lines = createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
      output.push(line + '\n');
      if (line.includes('listening on')) {
        clearTimeout(timer);
        resolve(line.trim().split(/\s+/).pop());
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening: ${output.join('')}`));
    });
  });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      if ((await fetch(url + '/ready')).status === 200) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error('server never became ready');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    output,
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
      return proc.exitCode;
    },
  };
}

export function tinyModel(extra = {}) {
  // packed_cache off: "auto" would write a .writeup-cache/ folder into tests/data
  return { name: 'tiny-gpt2', path: path.join(DATA, 'tiny-gpt2'), packed_cache: 'off', ...extra };
}

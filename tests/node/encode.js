// Second tokenizer reference: OpenAI's original GPT-2 BPE as shipped in the npm package
// gpt-3-encoder. Reads a JSON array of strings (argv[2]) and writes a JSON array of id
// arrays (argv[3]).
const fs = require('fs');
const { encode } = require('gpt-3-encoder');

const texts = JSON.parse(fs.readFileSync(process.argv[2], 'utf-8'));
fs.writeFileSync(process.argv[3], JSON.stringify(texts.map((t) => encode(t))));

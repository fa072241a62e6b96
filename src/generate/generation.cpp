#include "writeup/generate/generation.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

#include "writeup/generate/sampler.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/stream_decoder.hpp"

namespace writeup::generate {
namespace {

struct Running {
  Sampler sampler;
  text::StreamDecoder decoder;
  GeneratedSequence out;
  bool done = false;
};

bool append_text(Running& s, const std::string& piece, const std::vector<std::string>& stops) {
  return append_until_stop(s.out.text, piece, stops);
}

}  // namespace

bool append_until_stop(std::string& text, const std::string& piece, const std::vector<std::string>& stops) {
  const std::size_t before = text.size();
  text += piece;
  for (const auto& stop : stops) {
    const std::size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
    const auto at = text.find(stop, from);
    if (at != std::string::npos) {
      text.resize(at);
      return true;
    }
  }
  return false;
}

std::vector<GeneratedSequence> generate(const model::GPT2Model& model,
                                        const text::BpeTokenizer& tokenizer,
                                        const GenerationRequest& request,
                                        const TokenCallback& on_token,
                                        const StopCheck& should_stop) {
  const auto& p = request.params;
  p.validate();
  if (request.prompt.empty()) throw std::invalid_argument("prompt is empty");
  if (request.n < 1) throw std::invalid_argument("n must be at least 1");
  const int ctx = model.config().n_positions;
  const int prompt_len = static_cast<int>(request.prompt.size());
  if (prompt_len + p.max_tokens > ctx) {
    throw std::invalid_argument("prompt (" + std::to_string(prompt_len) + " tokens) + max_tokens (" +
                                std::to_string(p.max_tokens) + ") exceeds the model context of " +
                                std::to_string(ctx) + " tokens");
  }
  // A vocabulary padded past the tokenizer's (e.g. 50304 rows) is sampled over the tokenizer's
  // ids only, as the engine does; a smaller one belongs to other weights.
  const int model_rows = model.config().vocab_size, ids = tokenizer.vocab_size();
  if (model_rows < ids) {
    throw std::invalid_argument("the model's vocabulary has " + std::to_string(model_rows) + " rows but its tokenizer has " +
                                std::to_string(ids) + " tokens");
  }
  const auto vocab = static_cast<std::size_t>(ids);
  auto cache = model.make_cache(request.n, prompt_len + p.max_tokens);
  std::vector<Running> seqs;
  seqs.reserve(static_cast<std::size_t>(request.n));
  for (int i = 0; i < request.n; ++i) {
    seqs.push_back(Running{Sampler(p, i, request.prompt), text::StreamDecoder(tokenizer), {}});
  }
  const auto cancel_all = [&] {
    for (auto& s : seqs) {
      if (!s.done) s.out.finish_reason = "cancelled";
      s.done = true;
    }
  };
  const auto results = [&] {
    std::vector<GeneratedSequence> out;
    for (auto& s : seqs) out.push_back(std::move(s.out));
    return out;
  };
  if (should_stop && should_stop()) {
    cancel_all();
    return results();
  }
  // Prefill once into slot 0, then share the prompt's keys/values with every other slot.
  std::vector<model::SequenceChunk> chunks{{0, 0, request.prompt}};
  at::Tensor logits = model.forward(chunks, cache);  // [1, V]
  for (int i = 1; i < request.n; ++i) cache.copy_prefix(0, i, prompt_len);
  std::vector<int> rows(static_cast<std::size_t>(request.n), 0);  // logits row per sequence

  for (int step = 0;; ++step) {
    chunks.clear();
    for (int i = 0; i < request.n; ++i) {
      auto& s = seqs[static_cast<std::size_t>(i)];
      if (s.done) continue;
      const auto row = logits[rows[static_cast<std::size_t>(i)]];
      const int token = s.sampler.sample({row.data_ptr<float>(), vocab});
      if (token == model.config().eos_token_id) {
        s.done = true;
        s.out.finish_reason = "stop";
        append_text(s, s.decoder.flush(), p.stop);
      } else {
        s.out.tokens.push_back(token);
        const std::string piece = s.decoder.push(token);
        if (append_text(s, piece, p.stop)) {
          s.done = true;
          s.out.finish_reason = "stop";
        } else if (static_cast<int>(s.out.tokens.size()) >= p.max_tokens) {
          s.done = true;
          s.out.finish_reason = "length";
          append_text(s, s.decoder.flush(), p.stop);
        }
        if (on_token) on_token(i, token, piece);
      }
      if (!s.done) {
        rows[static_cast<std::size_t>(i)] = static_cast<int>(chunks.size());
        chunks.push_back({i, prompt_len + step, {token}});
      }
    }
    if (!chunks.empty() && should_stop && should_stop()) {
      cancel_all();
      chunks.clear();
    }
    if (chunks.empty()) break;
    logits = model.forward(chunks, cache);  // [running, V]
  }
  return results();
}

}  // namespace writeup::generate

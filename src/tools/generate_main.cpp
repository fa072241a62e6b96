// writeup-generate: run a model directory on one prompt and print the continuations.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cli_args.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/service/local_generation.hpp"
#include "writeup/model/safetensors.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/threads.hpp"

namespace {

constexpr const char* kUsage = R"(usage: writeup-generate --model DIR --prompt TEXT [options]
  --max-tokens N        new tokens per sequence (default 32)
  --n N                 sequences (default 1)
  --temperature T       0 = greedy (default 1)
  --top-k K             0 = off (default 0)
  --top-p P             1 = off (default 1)
  --repetition-penalty R, --presence-penalty P, --frequency-penalty F
  --stop TEXT           stop string (not included)
  --seed S              default 42
  --device D            cpu (default), cuda, cuda:N
  --dtype T             auto (default), float32, float16, bfloat16
  --weights W           f32 (default), bf16, int8: the CPU packed kernels' weight format
  --packed-cache DIR    the packed-weights cache folder: auto (default: beside the model when
                        writable, else ~/.cache/writeup), a folder, or off
  --threads N           intra-op threads (default: one per core)
  --ids                 print token ids instead of text
  --timing              print load, prefill and decode timings to stderr
  --logprobs N          print each token's log-probability and its N (<= 5) most likely
                        alternatives (to stderr), as the engine reports them
  --dump-logits FILE    also write the prompt's logits at every position (float32 [T, V],
                        tensor "logits") to a safetensors file
)";

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The prompt's logits at every position, float32 [T, V], as tensor "logits" of a
// safetensors file (for comparing a device and dtype with a reference).
void dump_logits(const writeup::model::GPT2Model& model, const std::vector<int>& prompt, const std::string& path) {
  auto cache = model.make_cache(1, static_cast<int>(prompt.size()));
  std::vector<writeup::model::SequenceChunk> chunk{{0, 0, prompt}};
  const at::Tensor logits = model.forward(chunk, cache, /*all_logits=*/true).contiguous();  // [T, V]
  writeup::model::write_safetensors(
      path, {{"logits", writeup::model::DType::F32, {logits.size(0), logits.size(1)}}}, {},
      [&](std::size_t) {
        return std::string(static_cast<const char*>(logits.data_ptr()), static_cast<std::size_t>(logits.nbytes()));
      });
}

int run(int argc, char** argv) {
  writeup::tools::CliArgs args(
      argc, argv,
      {"model", "prompt", "max-tokens", "n", "temperature", "top-k", "top-p",
       "repetition-penalty", "presence-penalty", "frequency-penalty", "stop", "seed", "device",
       "dtype", "weights", "packed-cache", "threads", "dump-logits", "logprobs"},
      {"ids", "timing", "help"});
  if (args.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  writeup::configure_threads(args.get_int("threads", 0));
  const auto t_load = Clock::now();
  const std::string dir = args.require("model");
  writeup::generate::GenerationRequest req;
  req.n = args.get_int("n", 1);
  req.logprobs = args.get_int("logprobs", 0);
  // The server's engine (worker, scheduler, runner, output processor), for this one request.
  writeup::service::LocalEngineOptions eo;
  eo.path = dir;
  eo.load = {args.get("device", "cpu"), args.get("dtype", "auto"), true, args.get("weights", "f32"),
             args.get("packed-cache", "auto")};
  eo.slots = std::max(1, req.n);
  writeup::service::LocalEngine engine(eo);
  const double load_ms = ms_since(t_load);

  req.prompt = engine.tokenizer().encode(args.require("prompt"));
  auto& p = req.params;
  p.max_tokens = args.get_int("max-tokens", 32);
  p.temperature = static_cast<float>(args.get_double("temperature", 1.0));
  p.top_k = args.get_int("top-k", 0);
  p.top_p = static_cast<float>(args.get_double("top-p", 1.0));
  p.repetition_penalty = static_cast<float>(args.get_double("repetition-penalty", 1.0));
  p.presence_penalty = static_cast<float>(args.get_double("presence-penalty", 0.0));
  p.frequency_penalty = static_cast<float>(args.get_double("frequency-penalty", 0.0));
  p.seed = args.get_u64("seed", 42);
  if (args.has("stop")) p.stop.push_back(args.get("stop", ""));

  if (args.has("dump-logits")) dump_logits(*engine.worker().model(), req.prompt, args.get("dump-logits", ""));

  const auto t_start = Clock::now();
  Clock::time_point t_first{}, t_last{};
  long tokens = 0;
  auto run = engine.run(req, [&](const writeup::engine::TokenOutput& o) {
    if (o.token < 0 || o.finish == writeup::engine::FinishReason::eos) return;  // EOS is not a new token
    t_last = Clock::now();
    if (tokens++ == 0) t_first = t_last;
  });
  const auto& results = run.sequences;
  if (req.logprobs > 0) {
    for (std::size_t i = 0; i < run.logprobs.size(); ++i) {
      for (const auto& t : run.logprobs[i]) {
        std::fprintf(stderr, "%zu %d %.4f", i, t.token, static_cast<double>(t.logprob));
        for (const auto& [token, logprob] : t.top) std::fprintf(stderr, " %d:%.4f", token, static_cast<double>(logprob));
        std::fprintf(stderr, "\n");
      }
    }
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results.size() > 1) std::cout << "=== " << i << " (" << results[i].finish_reason << ") ===\n";
    if (args.has("ids")) {
      for (std::size_t k = 0; k < results[i].tokens.size(); ++k) {
        std::cout << (k ? " " : "") << results[i].tokens[k];
      }
      std::cout << "\n";
    } else {
      std::cout << results[i].text << "\n";
    }
  }
  if (args.has("timing")) {
    const double first_ms = tokens ? std::chrono::duration<double, std::milli>(t_first - t_start).count() : 0;
    const double decode_ms = std::chrono::duration<double, std::milli>(t_last - t_first).count();
    std::fprintf(stderr,
                 "load_ms=%.1f prompt_tokens=%zu first_token_ms=%.2f generated_tokens=%ld "
                 "decode_tokens_per_s=%.2f\n",
                 load_ms, req.prompt.size(), first_ms, tokens,
                 tokens > 1 && decode_ms > 0 ? (tokens - 1) * 1000.0 / decode_ms : 0.0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return writeup::tools::run_tool("writeup-generate", kUsage, run, argc, argv);
}

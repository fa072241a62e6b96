// writeup-bench prefill: what the editor's request costs before its first word. A prompt of
// --chars characters (default 500, what the editor sends: the text before the cursor) goes
//   (1) through one forward step as one chunk (the packed kernels run each projection over all
//       its rows with the weights read once per block of rows): prompt tokens per second;
//   (2) through the server's engine (worker, scheduler in chunks of 128, runner, sampler) with
//       max_tokens 1: time to first token.
// Every run's prompt differs in its first word, so no run reuses another's keys and values.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/engine/output.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/service/local_generation.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/threads.hpp"

namespace writeup::tools {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// English prose, repeated to `chars` characters and cut at a word boundary; `run` picks the
// first word.
std::string prompt_text(std::size_t chars, int run) {
  static const char* kFirst[] = {"Yesterday", "Tomorrow", "Somewhere", "Meanwhile", "Afterwards", "Eventually", "Suddenly"};
  const std::string body =
      " the old lighthouse keeper climbed the spiral stairs again, counting each worn step as "
      "he had done for forty years. The storm had passed in the night, leaving the harbour "
      "strewn with driftwood and the smell of salt and tar. From the gallery he could see the "
      "fishing boats returning one by one, their lamps still burning against the grey morning. "
      "He wrote in the log that the glass had held, that the wind had turned to the west, and "
      "that the supply ship was three days late.";
  std::string text = kFirst[run % 7];
  while (text.size() < chars) text += body;
  text.resize(chars);
  const auto space = text.rfind(' ');
  if (space != std::string::npos && space > chars / 2) text.resize(space);
  return text;
}

}  // namespace

int bench_prefill(const CliArgs& args, const model::LoadOptions& load) {
  const std::string dir = args.require("model");
  configure_threads(args.get_int("threads", 0));
  const auto chars = static_cast<std::size_t>(args.get_int("chars", 500));
  const int runs = args.get_int("runs", 5);
  service::LocalEngine engine({dir, load, 1});
  const auto model = engine.worker().model();
  std::vector<std::vector<int>> prompts;
  for (int r = 0; r < runs + 1; ++r) prompts.push_back(engine.tokenizer().encode(prompt_text(chars, r)));
  const auto tokens = static_cast<int>(prompts[0].size());
  // (1) one step over the whole prompt
  model::RunnerOptions ro;
  ro.slots = 1;
  ro.max_tokens = std::min(model->config().n_positions, tokens + 8);
  ro.max_step_tokens = tokens + 8;
  model::ModelRunner runner(model, ro);
  std::vector<double> step_ms;
  for (int r = 0; r <= runs; ++r) {  // the first is a warm-up
    const std::vector<model::SequenceChunk> chunk{{0, 0, prompts[static_cast<std::size_t>(r)]}};
    const auto t = Clock::now();
    runner.step(chunk);
    if (r > 0) step_ms.push_back(ms_since(t));
  }
  // (2) the engine, to the first token
  std::vector<double> ttft_ms;
  for (int r = 0; r <= runs; ++r) {
    generate::GenerationRequest req;
    req.prompt = prompts[static_cast<std::size_t>(r)];
    req.params.max_tokens = 1;
    req.params.seed = 1;
    const auto t = Clock::now();
    double first = -1;
    engine.run(req, [&](const engine::TokenOutput& o) {
      if (first < 0 && o.token >= 0) first = ms_since(t);
    });
    if (r > 0 && first >= 0) ttft_ms.push_back(first);
  }
  std::printf("{\"bench\":\"prefill\",\"model\":\"%s\",\"weights\":\"%s\",\"chars\":%zu,\"prompt_tokens\":%d,"
              "\"prefill_ms\":%.2f,\"prompt_tokens_per_s\":%.1f,\"time_to_first_token_ms\":%.2f}\n",
              dir.c_str(), model::to_string(model->weight_format()), chars, tokens, median(step_ms),
              tokens / (median(step_ms) / 1e3), median(ttft_ms));
  return 0;
}

}  // namespace writeup::tools

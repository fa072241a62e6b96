// writeup-bench: measurements that do not belong in tests (the machine is shared and noisy,
// so every figure is the median of repeated runs).
//   writeup-bench tokenizer [--model DIR] [--mb N] [--runs N]
//   writeup-bench load --model DIR [--runs N]
//   writeup-bench decode --model DIR [--tokens N] [--runs N] [--threads N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include "cli_args.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/threads.hpp"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Single-thread sequential read bandwidth over a buffer much larger than the caches (GB/s).
double read_bandwidth_gbs() {
  std::vector<float> buf((1ull << 30) / sizeof(float), 1.0f);
  double best = 1e9;
  volatile float sink = 0;
  for (int r = 0; r < 5; ++r) {
    const auto t = Clock::now();
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (std::size_t i = 0; i + 3 < buf.size(); i += 4) {
      s0 += buf[i];
      s1 += buf[i + 1];
      s2 += buf[i + 2];
      s3 += buf[i + 3];
    }
    sink = s0 + s1 + s2 + s3;
    best = std::min(best, seconds_since(t));
  }
  (void)sink;
  return static_cast<double>(buf.size() * sizeof(float)) / best / 1e9;
}

int bench_tokenizer(const writeup::tools::CliArgs& args) {
  const std::string dir = args.get("model", WRITEUP_SOURCE_DIR "/tests/data/tiny-gpt2");
  const int runs = args.get_int("runs", 3);
  const double mb = args.get_double("mb", 4);
  // A corpus of random vocabulary entries: realistic sub-words, few repeats (cache-hostile).
  auto tok = writeup::text::BpeTokenizer::from_model_dir(dir);
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> id(0, tok->eos_id() - 1);
  std::string corpus;
  while (corpus.size() < mb * 1e6) {
    std::vector<int> ids(64);
    for (auto& i : ids) i = id(rng);
    corpus += tok->decode(ids);
  }
  std::vector<double> cold, warm;
  std::size_t tokens = 0;
  for (int r = 0; r < runs; ++r) {
    auto fresh = writeup::text::BpeTokenizer::from_model_dir(dir);
    auto t = Clock::now();
    tokens = fresh->encode(corpus).size();
    cold.push_back(corpus.size() / 1e6 / seconds_since(t));
    t = Clock::now();
    fresh->encode(corpus);
    warm.push_back(corpus.size() / 1e6 / seconds_since(t));
  }
  std::printf("{\"bench\":\"tokenizer\",\"bytes\":%zu,\"tokens\":%zu,\"cold_mb_per_s\":%.2f,"
              "\"warm_mb_per_s\":%.2f,\"runs\":%d}\n",
              corpus.size(), tokens, median(cold), median(warm), runs);
  return 0;
}

int bench_load(const writeup::tools::CliArgs& args) {
  const std::string dir = args.require("model");
  std::vector<double> load, first;
  for (int r = 0; r < args.get_int("runs", 3); ++r) {
    const auto t = Clock::now();
    auto model = writeup::model::GPT2Model::load(dir);
    auto tok = writeup::text::BpeTokenizer::from_model_dir(dir);
    load.push_back(seconds_since(t));
    auto cache = model->make_cache(1, 8);
    std::vector<writeup::model::SequenceChunk> chunk{{0, 0, tok->encode("Hello")}};
    model->forward(chunk, cache);
    first.push_back(seconds_since(t));
  }
  std::printf("{\"bench\":\"load\",\"model\":\"%s\",\"load_s\":%.3f,\"load_and_first_token_s\":%.3f}\n",
              dir.c_str(), median(load), median(first));
  return 0;
}

int bench_decode(const writeup::tools::CliArgs& args) {
  const std::string dir = args.require("model");
  writeup::configure_threads(args.get_int("threads", 0));
  auto model = writeup::model::GPT2Model::load(dir);
  auto tok = writeup::text::BpeTokenizer::from_model_dir(dir);
  writeup::generate::GenerationRequest req;
  req.prompt = tok->encode("The history of the written word begins");
  req.params.max_tokens = args.get_int("tokens", 128);
  req.n = args.get_int("n", 1);
  std::vector<double> rates, steps;
  for (int r = 0; r < args.get_int("runs", 3); ++r) {
    req.params.seed = static_cast<std::uint64_t>(r);
    Clock::time_point first{}, last{};
    long count = 0;
    writeup::generate::generate(*model, *tok, req, [&](int index, int, const std::string&) {
      const auto now = Clock::now();
      if (index == 0 && count > 0) steps.push_back(std::chrono::duration<double, std::milli>(now - last).count());
      last = now;
      if (count++ == 0) first = last;
    });
    rates.push_back((count - req.n) / std::chrono::duration<double>(last - first).count());
  }
  // Bytes a decode step must stream: every weight once (lm_head shares wte when tied).
  const auto& w = model->weights();
  double bytes = 0;  // the embeddings contribute one row each: ignored
  for (const auto& b : w.h) {
    for (const auto* t : {&b.attn_c_attn_weight, &b.attn_c_proj_weight, &b.mlp_c_fc_weight,
                          &b.mlp_c_proj_weight}) {
      bytes += static_cast<double>(t->numel() * t->element_size());
    }
  }
  bytes += static_cast<double>(w.lm_head.numel() * w.lm_head.element_size());
  const double bw = read_bandwidth_gbs();
  const double floor_ms = bytes / (bw * 1e9) * 1e3;
  const double tps = median(rates);
  std::printf("{\"bench\":\"decode\",\"model\":\"%s\",\"sequences\":%d,\"tokens\":%d,"
              "\"tokens_per_s\":%.2f,\"ms_per_step\":%.2f,\"median_step_ms\":%.2f,\"weight_bytes\":%.0f,"
              "\"read_bandwidth_gb_s\":%.2f,\"floor_ms\":%.2f,\"median_step_x_floor\":%.2f}\n",
              dir.c_str(), req.n, req.params.max_tokens, tps, 1e3 * req.n / tps, median(steps), bytes, bw,
              floor_ms, median(steps) / floor_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: writeup-bench tokenizer|load|decode [options]\n";
    return 2;
  }
  const std::string mode = argv[1];
  try {
    writeup::tools::CliArgs args(argc - 1, argv + 1, {"model", "mb", "runs", "tokens", "threads", "n"}, {});
    if (mode == "tokenizer") return bench_tokenizer(args);
    if (mode == "load") return bench_load(args);
    if (mode == "decode") return bench_decode(args);
    std::cerr << "writeup-bench: unknown mode '" << mode << "' (tokenizer, load or decode)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "writeup-bench: " << e.what() << "\n";
    return 1;
  }
}

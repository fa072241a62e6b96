// writeup-bench: measurements that do not belong in tests (the machine is shared and noisy,
// so every figure is the median of repeated runs).
//   writeup-bench tokenizer [--model DIR] [--mb N] [--runs N] [--long-word-kb K]
//   writeup-bench load --model DIR [--runs N]
//   writeup-bench decode --model DIR [--tokens N] [--runs N] [--threads N] [--device D] [--dtype T] [--n N]
//                        [--prompt TEXT] [--temperature T] [--top-k K] [--top-p P]   (default: temperature 1, no top-k/p)
//                        [--ignore-eos]   (logit_bias -100 on <|endoftext|>: every sequence runs --tokens steps)
//   writeup-bench engine --model DIR [--concurrency 1,4,8,16] [--tokens N] [--runs N] [--device D] [--dtype T]
//                        [--prompt-tokens N] [--prompt-logprobs K]   (K >= 0: echo logprobs, K alternatives)
//   writeup-bench step --model DIR [--n 8] [--tokens N] [--threads N]   (decode-step breakdown)
//   writeup-bench pair --model DIR [--weights int8] [--against f32] [--tokens N] [--runs N] [--threads N]
//                      [--prompt TEXT] [--temperature T] [--top-k K] [--top-p P]   (two formats' steps interleaved)
//   writeup-bench sample [--tokens N] [--runs N] [--setting S] [--shape flat|peaked]   (us per sampled token)
//   writeup-bench fidelity --model DIR [--positions 2048] [--seq 256] [--seed S]   (bf16/int8 logits vs f32)
//   writeup-bench prefill --model DIR [--chars 500] [--runs N] [--threads N]   (prompt tokens/s, time to first token)
//   (decode, engine, step, pair, load, prefill: --weights f32|bf16|int8, the packed kernels' weight format;
//    --packed-cache auto|DIR|off, the packed-weights cache folder, default auto)
//   writeup-bench wire --url ws://HOST:PORT [--sessions N] [--requests N] [--batch-size 7] [--length 40]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include "bench_wire.hpp"
#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/generate/sampler.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/service/local_generation.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/threads.hpp"

namespace writeup::tools {
int bench_sample(int argc, char** argv);       // bench_sample.cpp
int bench_fidelity(const CliArgs& args);       // bench_fidelity.cpp
int bench_prefill(const CliArgs& args, const model::LoadOptions& load);  // bench_prefill.cpp
int bench_step(const CliArgs& args, model::LoadOptions load);            // bench_step.cpp
int bench_pair(const CliArgs& args, model::LoadOptions load);            // bench_pair.cpp
}  // namespace writeup::tools

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// --device (cpu, cuda:N) and --dtype (auto, float32, float16, bfloat16).
writeup::model::LoadOptions load_options(const writeup::tools::CliArgs& args) {
  writeup::model::LoadOptions o;
  o.device = args.get("device", o.device);
  o.dtype = args.get("dtype", o.dtype);
  o.weights = args.get("weights", o.weights);
  o.packed_cache = args.get("packed-cache", "auto");
  if (o.packed_cache == "off") o.packed_cache.clear();
  return o;
}

using writeup::tools::median;
using writeup::tools::percentile;

// Sequential read bandwidth with every intra-op thread reading its share of a buffer much
// larger than the caches (GB/s): what a decode step that streams the weights can get.
double read_bandwidth_gb_s() {
  const std::size_t n = (1ull << 30) / sizeof(float);
  std::vector<float> buf(n, 1.0f);
  double best = 1e9;
  std::atomic<double> sink{0};
  for (int r = 0; r < 5; ++r) {
    const auto t = Clock::now();
    at::parallel_for(0, static_cast<std::int64_t>(n / 4096), 1, [&](std::int64_t b, std::int64_t e) {
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (std::size_t i = static_cast<std::size_t>(b) * 4096; i < static_cast<std::size_t>(e) * 4096; i += 4) {
        s0 += buf[i];
        s1 += buf[i + 1];
        s2 += buf[i + 2];
        s3 += buf[i + 3];
      }
      sink = sink + s0 + s1 + s2 + s3;
    });
    best = std::min(best, seconds_since(t));
  }
  return static_cast<double>(n * sizeof(float)) / best / 1e9;
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
  // One pre-tokenizer word of K KB of random letters: the BPE merge of a single long word
  // (what a prompt without spaces costs; it was quadratic in the word's length).
  const double long_kb = args.get_double("long-word-kb", 0);
  if (long_kb > 0) {
    std::string word;
    std::uniform_int_distribution<int> letter(0, 25);
    while (word.size() < long_kb * 1000) word.push_back(static_cast<char>('a' + letter(rng)));
    std::vector<double> secs;
    std::size_t word_tokens = 0;
    for (int r = 0; r < runs; ++r) {
      auto fresh = writeup::text::BpeTokenizer::from_model_dir(dir);
      const auto t = Clock::now();
      word_tokens = fresh->encode(word).size();
      secs.push_back(seconds_since(t));
    }
    std::printf("{\"bench\":\"tokenizer_long_word\",\"bytes\":%zu,\"tokens\":%zu,"
                "\"median_s\":%.4f,\"runs\":%d}\n",
                word.size(), word_tokens, median(secs), runs);
  }
  return 0;
}

int bench_load(const writeup::tools::CliArgs& args) {
  const std::string dir = args.require("model");
  std::vector<double> load, first;
  for (int r = 0; r < args.get_int("runs", 3); ++r) {
    // The server's path: tokenizer, weights and KV cache on a worker, then one token through
    // the scheduler, the runner and the output processor.
    const auto t = Clock::now();
    writeup::service::LocalEngine engine({dir, load_options(args)});
    load.push_back(seconds_since(t));
    writeup::generate::GenerationRequest req;
    req.prompt = engine.tokenizer().encode("Hello");
    req.params.max_tokens = 1;
    engine.run(req);
    first.push_back(seconds_since(t));
  }
  // each run's figures too: the first may pack and write the packed-weights cache, later ones map it
  std::string each;
  for (std::size_t i = 0; i < load.size(); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s[%.3f,%.3f]", i ? "," : "", load[i], first[i]);
    each += buf;
  }
  std::printf("{\"bench\":\"load\",\"model\":\"%s\",\"weights\":\"%s\",\"load_s\":%.3f,"
              "\"load_and_first_token_s\":%.3f,\"runs\":[%s]}\n",
              dir.c_str(), args.get("weights", "f32").c_str(), median(load), median(first), each.c_str());
  return 0;
}

int bench_decode(const writeup::tools::CliArgs& args) {
  const std::string dir = args.require("model");
  writeup::configure_threads(args.get_int("threads", 0));
  writeup::generate::GenerationRequest req;
  req.n = args.get_int("n", 1);
  // The server's engine for one request: worker, scheduler, runner, output processor.
  writeup::service::LocalEngine engine({dir, load_options(args), std::max(1, req.n)});
  const auto model = engine.worker().model();
  req.prompt = engine.tokenizer().encode(args.get("prompt", "The history of the written word begins"));
  req.params.max_tokens = args.get_int("tokens", 128);
  // Sampling settings, so a paired run can sample as the other engine does (scripts/bench-ggml).
  req.params.temperature = static_cast<float>(args.get_double("temperature", req.params.temperature));
  req.params.top_k = args.get_int("top-k", req.params.top_k);
  req.params.top_p = static_cast<float>(args.get_double("top-p", req.params.top_p));
  if (args.has("ignore-eos") && engine.tokenizer().eos_id() >= 0) {
    req.params.logit_bias = {{engine.tokenizer().eos_id(), -100.0f}};  // sequences run all --tokens steps
  }
  std::vector<double> rates, steps;
  for (int r = 0; r < args.get_int("runs", 3); ++r) {
    req.params.seed = static_cast<std::uint64_t>(r);
    Clock::time_point first{}, last{};
    long count = 0;
    engine.run(req, [&](const writeup::engine::TokenOutput& o) {
      if (o.token < 0 || o.finish == writeup::engine::FinishReason::eos) return;
      const auto now = Clock::now();
      if (o.index == 0 && count > 0) steps.push_back(std::chrono::duration<double, std::milli>(now - last).count());
      last = now;
      if (count++ == 0) first = last;
    });
    rates.push_back((count - req.n) / std::chrono::duration<double>(last - first).count());
  }
  // Bytes a decode step must stream: every weight once (lm_head shares wte when tied), from the
  // shapes (a warm packed-cache load does not keep the dense matrices).
  const auto& cfg = model->config();
  const double C = cfg.n_embd, F = cfg.mlp_dim();
  const double weights = cfg.n_layer * (C * 3 * C + C * C + 2 * C * F) + C * cfg.vocab_size;
  double bytes = weights * static_cast<double>(c10::elementSize(model->dtype()));  // the embeddings' rows: ignored
  const auto format = model->weight_format();  // the packed kernels stream 2 or 1 + 4/64 bytes a weight
  if (format == writeup::model::WeightFormat::bf16) bytes /= 2;
  if (format == writeup::model::WeightFormat::int8) bytes *= (1.0 + 4.0 / writeup::model::PackedLinear::kInt8Group) / 4;
  const double bw = read_bandwidth_gb_s();
  const double floor_ms = bytes / (bw * 1e9) * 1e3;
  const double tps = median(rates);
  std::printf("{\"bench\":\"decode\",\"model\":\"%s\",\"weights\":\"%s\",\"kernel\":\"%s\",\"sequences\":%d,\"prompt_tokens\":%zu,\"tokens\":%d,"
              "\"tokens_per_s\":%.2f,\"ms_per_step\":%.2f,\"median_step_ms\":%.2f,\"weight_bytes\":%.0f,"
              "\"read_bandwidth_gb_s\":%.2f,\"floor_ms\":%.2f,\"median_step_x_floor\":%.2f}\n",
              dir.c_str(), writeup::model::to_string(format), writeup::model::PackedLinear::kernel_name(format), req.n, req.prompt.size(), req.params.max_tokens, tps, 1e3 * req.n / tps, median(steps), bytes, bw,
              floor_ms, median(steps) / floor_ms);
  return 0;
}

// Counts a bench job's tokens and ended sequences (on the worker's thread).
class BenchSink final : public writeup::engine::JobSink {
 public:
  // (first output of the job, sequences that ended, tokens generated)
  using Report = std::function<void(bool first, int ended, long tokens)>;
  BenchSink(int sequences, Report report) : left_(sequences), report_(std::move(report)) {}
  void on_outputs(std::span<const writeup::engine::TokenOutput> outputs) override {
    int ended = 0;
    long tokens = 0;
    for (const auto& o : outputs) {
      ended += o.finish != writeup::engine::FinishReason::none ? 1 : 0;
      tokens += o.token >= 0 && o.finish != writeup::engine::FinishReason::eos ? 1 : 0;
    }
    left_ -= ended;
    report_(std::exchange(first_, false), ended, tokens);
  }
  void on_error(writeup::engine::ErrorKind, const std::string&) override { report_(false, std::exchange(left_, 0), 0); }

 private:
  int left_;
  Report report_;
  bool first_ = true;
};

// The real engine (continuous batching) under C concurrent single-sequence requests: each
// client submits its next request as soon as the previous one completes.
int bench_engine(const writeup::tools::CliArgs& args) {
  using namespace writeup;
  const std::string dir = args.require("model");
  configure_threads(args.get_int("threads", 0));
  auto tok = std::shared_ptr<const text::BpeTokenizer>(text::BpeTokenizer::from_model_dir(dir));
  std::vector<int> levels;
  {
    std::string list = args.get("concurrency", "1,4,8,16");
    for (std::size_t p = 0; p < list.size();) {
      const auto c = list.find(',', p);
      levels.push_back(std::stoi(list.substr(p, c - p)));
      p = c == std::string::npos ? list.size() : c + 1;
    }
  }
  const int tokens = args.get_int("tokens", 64), runs = args.get_int("runs", 3);
  const int n = args.get_int("n", 1);  // sequences per request
  const int prompt_logprobs = args.get_int("prompt-logprobs", -1);  // -1: off
  engine::WorkerOptions o;
  o.model_name = "bench";
  o.path = dir;
  o.load = load_options(args);
  o.scheduler.slots = *std::max_element(levels.begin(), levels.end()) * n;
  o.scheduler.min_slots = n;
  o.max_queue = 1024;
  engine::Worker worker(std::move(o), tok);
  while (!worker.load_ended()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (!worker.loaded()) throw std::runtime_error("the model did not load: " + worker.load_error());
  // --prompt-tokens N: a prompt of exactly N tokens (time to first token by prompt length).
  std::vector<int> prompt = tok->encode("The history of the written word begins with");
  if (args.has("prompt-tokens")) {
    const auto want = static_cast<std::size_t>(args.get_int("prompt-tokens", 32));
    const auto base = prompt;
    prompt.clear();
    while (prompt.size() < want) prompt.push_back(base[prompt.size() % base.size()]);
  }
  std::printf("%-12s %14s %12s %12s\n", "concurrency", "tokens/s", "ttft_p50_ms", "ttft_p99_ms");
  for (int c : levels) {
    std::vector<double> rates, ttft;
    for (int r = 0; r < runs; ++r) {
      std::mutex m;
      std::condition_variable cv;
      int outstanding_sequences = 0;
      long generated = 0;
      const auto t0 = Clock::now();
      std::function<void(int)> launch = [&](int client) {
        auto job = std::make_shared<engine::Job>();
        job->request.prompt = prompt;
        job->request.n = n;
        job->request.params.max_tokens = tokens;
        if (prompt_logprobs >= 0) {
          job->request.prompt_logprobs = true;
          job->request.logprobs = prompt_logprobs;
        }
        job->request.params.seed = static_cast<std::uint64_t>(client * 1000 + r);
        const auto start = Clock::now();
        job->sink = std::make_shared<BenchSink>(n, [&, start](bool first, int ended, long got) {
          std::lock_guard l(m);
          if (first) ttft.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
          generated += got;
          outstanding_sequences -= ended;
          if (outstanding_sequences == 0) cv.notify_all();
        });
        {
          std::lock_guard l(m);
          outstanding_sequences += n;
        }
        worker.submit(job);
      };
      // Each client runs 2 requests back to back.
      for (int round = 0; round < 2; ++round) {
        for (int i = 0; i < c; ++i) launch(i);
        std::unique_lock l(m);
        cv.wait(l, [&] { return outstanding_sequences == 0; });
      }
      rates.push_back(static_cast<double>(generated) / seconds_since(t0));
    }
    std::printf("%-12d %14.2f %12.1f %12.1f\n", c, median(rates), percentile(ttft, 0.5), percentile(ttft, 0.99));
    std::printf("{\"bench\":\"engine\",\"model\":\"%s\",\"concurrency\":%d,\"sequences_per_request\":%d,"
                "\"prompt_tokens\":%zu,\"prompt_logprobs\":%d,\"tokens_per_request\":%d,\"tokens_per_s\":%.2f,\"ttft_p50_ms\":%.1f,"
                "\"ttft_p99_ms\":%.1f}\n",
                dir.c_str(), c, n, prompt.size(), prompt_logprobs, tokens, median(rates), percentile(ttft, 0.5), percentile(ttft, 0.99));
    std::fflush(stdout);
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: writeup-bench tokenizer|load|decode|engine|step|pair|fidelity|sample|wire [options]\n";
    return 2;
  }
  const std::string mode = argv[1];
  try {
    if (mode == "sample") return writeup::tools::bench_sample(argc - 1, argv + 1);
    writeup::tools::CliArgs args(argc - 1, argv + 1, {"model", "mb", "runs", "tokens", "threads", "n", "concurrency", "url", "sessions", "prompt-tokens",
                                                           "requests", "batch-size", "length", "model-name", "device", "dtype", "kernel", "long-word-kb", "prompt-logprobs",
                                                           "weights", "packed-cache", "positions", "seq", "seed", "chars", "prompt", "temperature",
                                                           "top-k", "top-p", "against"},
                                 {"ignore-eos"});
    // --kernel avx512|avx512bw|avx2|generic: the kernels an older CPU would run (for before/after ratios)
    const std::string kernel = args.get("kernel", "auto");
    using K = writeup::model::PackedLinear::Kernel;
    const std::pair<const char*, K> kernels[] = {{"auto", K::automatic}, {"avx512", K::avx512}, {"avx512bw", K::avx512bw},
                                                 {"avx2", K::avx2}, {"generic", K::generic}};
    const auto chosen = std::find_if(std::begin(kernels), std::end(kernels), [&](const auto& k) { return kernel == k.first; });
    if (chosen == std::end(kernels)) {
      std::cerr << "writeup-bench: unknown --kernel '" << kernel << "' (auto, avx512, avx512bw, avx2 or generic)\n";
      return 2;
    }
    writeup::model::PackedLinear::force_kernel(chosen->second);
    if (mode == "tokenizer") return bench_tokenizer(args);
    if (mode == "load") return bench_load(args);
    if (mode == "decode") return bench_decode(args);
    if (mode == "engine") return bench_engine(args);
    if (mode == "step") return writeup::tools::bench_step(args, load_options(args));
    if (mode == "pair") return writeup::tools::bench_pair(args, load_options(args));
    if (mode == "fidelity") return writeup::tools::bench_fidelity(args);
    if (mode == "prefill") return writeup::tools::bench_prefill(args, load_options(args));
    if (mode == "wire") return writeup::tools::bench_wire(args);
    std::cerr << "writeup-bench: unknown mode '" << mode << "' (tokenizer, load, decode, engine, step, pair, fidelity, sample or wire)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "writeup-bench: " << e.what() << "\n";
    return 1;
  }
}

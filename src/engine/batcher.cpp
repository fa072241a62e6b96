#include "writeup/engine/batcher.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <fstream>
#include <limits>
#include <utility>

#include "writeup/engine/device_failure.hpp"
#include "writeup/generate/sampler.hpp"
#include "writeup/model/device.hpp"
#include "writeup/metrics/registry.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/stream_decoder.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::engine {

using Clock = Job::Clock;

struct Batcher::Sequence {
  int slot = 0;
  generate::Sampler sampler;
  text::StreamDecoder decoder;
  generate::GeneratedSequence out;
  bool done = false;
  int last = 0;  // the token to feed next
  int pos = 0;   // where `last` goes in the cache
  int drawn = -1;  // the next token, sampled ahead in parallel by sample_ahead (-1: none,
                   // kSampleFailed: sampling threw, `error` says why)
  std::string error{};
  Clock::time_point last_time{};
};

struct Batcher::Active {
  std::shared_ptr<Job> job;
  std::vector<Sequence> seqs;
  int prefilled = 0;     // prompt tokens in the cache
  bool decoding = false;  // prefill finished
  bool first = true;      // no token yet (for time-to-first-token)
  bool failed = false;
  JobError error = JobError::internal;
  std::string message;
  bool finished() const {
    if (failed) return true;
    for (const auto& s : seqs) {
      if (!s.done) return false;
    }
    return true;
  }
};

namespace {

// MemAvailable from /proc/meminfo (bytes); 0 when unknown.
std::size_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  while (meminfo >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

constexpr int kSampleFailed = -2;

std::string mib(std::size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// Draws the next token of every sequence the step's logits [rows, V] are about to feed, in
// parallel (each sampler is its own sequence's state, so the tokens are the ones a serial pass
// would draw); on_logits then takes them in order.
template <typename Active, typename Row>
void sample_ahead(const std::vector<model::SequenceChunk>& chunks, const std::vector<Row>& rows,
                  const at::Tensor& logits, std::size_t vocab) {
  using Seq = typename std::remove_reference_t<decltype(std::declval<Active&>().seqs[0])>;
  std::vector<std::pair<Seq*, const float*>> work;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    Active& job = *rows[i].first;
    const float* row = logits[static_cast<std::int64_t>(i)].template data_ptr<float>();
    if (job.failed) continue;
    if (rows[i].second >= 0) {
      auto& s = job.seqs[static_cast<std::size_t>(rows[i].second)];
      if (!s.done) work.emplace_back(&s, row);
    } else if (job.prefilled + static_cast<int>(chunks[i].tokens.size()) ==
               static_cast<int>(job.job->request.prompt.size())) {
      for (auto& s : job.seqs) work.emplace_back(&s, row);
    }
  }
  at::parallel_for(0, static_cast<std::int64_t>(work.size()), 1, [&](std::int64_t b, std::int64_t e) {
    for (auto w = b; w < e; ++w) {
      auto [s, row] = work[static_cast<std::size_t>(w)];
      try {
        s->drawn = s->sampler.sample({row, vocab});
      } catch (const std::exception& e) {  // this sequence's problem: its job fails, no other
        s->drawn = kSampleFailed;
        s->error = e.what();
      }
    }
  });
}

}  // namespace

int Batcher::slots_within_budget(const model::GPT2Model& model, const BatcherOptions& options) {
  const auto& c = model.config();
  // Keys and values of every layer for a whole context: [2, L, T, C].
  const std::size_t slot_bytes = 2ull * static_cast<std::size_t>(c.n_layer) * static_cast<std::size_t>(c.n_positions) *
                                 static_cast<std::size_t>(c.n_embd) * c10::elementSize(model.dtype());
  std::size_t budget = options.kv_budget_bytes;
  if (budget == 0 && model.device().is_cpu()) budget = available_memory_bytes() / 4;
  if (budget == 0) return options.slots;
  const int fit = static_cast<int>(std::min<std::size_t>(budget / slot_bytes, static_cast<std::size_t>(options.slots)));
  if (fit < options.min_slots) {
    throw std::invalid_argument("the KV-cache budget of " + mib(budget) + " holds " + std::to_string(fit) +
                                " sequence(s) of " + std::to_string(c.n_positions) + " positions (" +
                                mib(slot_bytes) + " each), but requests may ask for " +
                                std::to_string(options.min_slots) + " at once: raise kv_cache_mb");
  }
  return fit;
}

Batcher::Batcher(std::shared_ptr<const model::GPT2Model> model, std::shared_ptr<const text::BpeTokenizer> tokenizer,
                 BatcherOptions options)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      options_(std::move(options)),
      sample_vocab_(sampled_vocab(*model_, *tokenizer_)),
      cache_(model_->make_cache(options_.slots)) {
  for (int i = options_.slots - 1; i >= 0; --i) free_.push_back(i);
}

Batcher::~Batcher() = default;

int Batcher::sampled_vocab(const model::GPT2Model& model, const text::BpeTokenizer& tokenizer) {
  const int rows = model.config().vocab_size, ids = tokenizer.vocab_size();
  if (rows < ids) {
    throw std::invalid_argument("the model's vocabulary has " + std::to_string(rows) +
                                " rows but its tokenizer has " + std::to_string(ids) +
                                " tokens: the tokenizer does not belong to these weights");
  }
  const int eos = model.config().eos_token_id;
  if (eos < 0 || eos >= ids) {
    throw std::invalid_argument("the model's eos_token_id " + std::to_string(eos) + " is not in its tokenizer's " +
                                std::to_string(ids) + " tokens");
  }
  // rows > ids: a vocabulary padded to a round size (e.g. 50304). The padding rows are never
  // sampled: the sampler only sees the first `ids` logits of a row.
  return ids;
}

void Batcher::admit(std::shared_ptr<Job> job) {
  const auto& r = job->request;
  const auto fail = [&](const std::string& message) {
    if (job->sink) return job->sink->on_error(JobError::invalid, message);  // TEMPORARY shim
    if (job->callbacks.on_error) job->callbacks.on_error(JobError::invalid, message);
  };
  if (r.n < 1 || r.n > options_.slots) {
    return fail("n = " + std::to_string(r.n) + " exceeds the " + std::to_string(options_.slots) +
                " sequences this worker runs at once");
  }
  if (r.prompt.empty()) return fail("prompt is empty");
  for (const int id : r.prompt) {
    if (id < 0 || id >= sample_vocab_) {
      return fail("prompt token id " + std::to_string(id) + " is outside the tokenizer's " +
                  std::to_string(sample_vocab_) + " tokens");
    }
  }
  const int ctx = model_->config().n_positions;
  if (static_cast<int>(r.prompt.size()) + r.params.max_tokens > ctx) {
    return fail("prompt (" + std::to_string(r.prompt.size()) + " tokens) + max_tokens (" +
                std::to_string(r.params.max_tokens) + ") exceeds the model context of " + std::to_string(ctx));
  }
  auto active = std::make_unique<Active>();
  try {
    for (int i = 0; i < r.n; ++i) {
      active->seqs.push_back(Sequence{0, generate::Sampler(r.params, i, r.prompt), text::StreamDecoder(*tokenizer_), {}});
    }
  } catch (const std::invalid_argument& e) {
    return fail(e.what());
  } catch (const std::exception& e) {
    log::error(std::string("a job could not be set up: ") + e.what());
    if (job->sink) return job->sink->on_error(JobError::internal, "the request could not be set up");  // TEMPORARY shim
    if (job->callbacks.on_error) job->callbacks.on_error(JobError::internal, "the request could not be set up");
    return;
  }
  if (static_cast<int>(free_.size()) < r.n) return fail("no free slots (admission bug)");
  for (auto& s : active->seqs) {
    s.slot = free_.back();
    free_.pop_back();
  }
  active->job = std::move(job);
  jobs_.push_back(std::move(active));
}

void Batcher::expire() {
  const auto now = Clock::now();
  for (auto& a : jobs_) {
    if (a->job->sink && !a->failed) {  // TEMPORARY shim: the processor's stop() and cancel() end sequences
      for (std::size_t i = 0; i < a->seqs.size(); ++i) {
        auto& s = a->seqs[i];
        if (s.done) continue;
        const bool cancelled = a->job->cancelled();
        if (!cancelled && !a->job->stopped(static_cast<int>(i))) continue;
        s.done = true;
        emit(*a, static_cast<int>(i), -1, cancelled ? FinishReason::cancelled : FinishReason::stop);
      }
    }
    if (a->job->cancelled()) {
      for (auto& s : a->seqs) {
        if (!s.done) s.out.finish_reason = "cancelled";
        s.done = true;
      }
    } else if (now > a->job->deadline && !a->failed) {
      a->failed = true;
      a->error = JobError::timeout;
      a->message = "the request took longer than its timeout";
    }
  }
}

bool Batcher::step() {
  ++steps_;
  expire();
  retire();
  std::vector<model::SequenceChunk> chunks;
  std::vector<Row> rows;
  for (auto& a : jobs_) {
    if (!a->decoding) continue;
    for (std::size_t i = 0; i < a->seqs.size(); ++i) {
      const auto& s = a->seqs[i];
      if (s.done) continue;
      chunks.push_back({s.slot, s.pos, {s.last}});
      rows.emplace_back(a.get(), static_cast<int>(i));
    }
  }
  // Prompt chunks, first come first served, up to prefill_chunk tokens per step in all: short
  // prompts arriving together start together instead of one per step.
  // A prompt is always cut at multiples of prefill_chunk, whatever else waits: its chunks (and
  // so its cache entries) never depend on load. A chunk that does not fit waits a step.
  const int chunk = std::max(1, options_.prefill_chunk);
  int budget = chunk;
  for (auto& a : jobs_) {
    if (a->decoding || a->failed) continue;
    const auto& prompt = a->job->request.prompt;
    const int n = std::min<int>(chunk, static_cast<int>(prompt.size()) - a->prefilled);
    if (n > budget) break;  // FIFO: nothing overtakes a waiting prompt
    chunks.push_back({a->seqs[0].slot, a->prefilled,
                      std::vector<int>(prompt.begin() + a->prefilled, prompt.begin() + a->prefilled + n)});
    rows.emplace_back(a.get(), -1);
    budget -= n;
  }
  if (chunks.empty()) return false;
  at::Tensor logits;
  run_rows(chunks, rows, logits);
  retire();
  return true;
}

// Runs the chunks; on a device OOM splits them in halves and retries each (the cache writes
// are idempotent and the kernels batch-invariant, so results are the same). A single chunk
// that still does not fit fails its job.
void Batcher::run_rows(std::vector<model::SequenceChunk>& chunks, std::vector<Row>& rows, at::Tensor& logits) {
  try {
    if (options_.before_forward) options_.before_forward(steps_, chunks);
    logits = model_->forward(chunks, cache_);  // [chunks, V]
  } catch (const c10::OutOfMemoryError& e) {
    if (options_.oom_total) options_.oom_total->inc();
    model::empty_device_cache(model_->device());  // hand cached blocks back before retrying
    if (chunks.size() == 1) {
      log::warn("out of memory for one sequence on its own: failing its request");
      fail(*rows[0].first, JobError::out_of_memory, "the device ran out of memory for this request");
      return;
    }
    log::warn("out of memory for " + std::to_string(chunks.size()) + " sequences: retrying in halves");
    return run_halves(chunks, rows);
  } catch (const std::exception& e) {
    if (is_device_failure(e)) throw;  // the worker's problem: it fails every job and probes
    // Something in one request's rows: find it by halving, so that the others still run.
    if (chunks.size() == 1) {
      log::warn("a forward pass failed for one request: " + describe(e));
      fail(*rows[0].first, JobError::internal, "the model failed on this request");
      return;
    }
    log::warn("a forward pass of " + std::to_string(chunks.size()) + " sequences failed (" + describe(e) +
              "): retrying in halves");
    return run_halves(chunks, rows);
  }
  sample_ahead<Active>(chunks, rows, logits, static_cast<std::size_t>(sample_vocab_));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    auto& [job, index] = rows[i];
    if (job->failed) continue;
    try {
      const float* row = logits[static_cast<std::int64_t>(i)].data_ptr<float>();
      if (index < 0) {
        job->prefilled += static_cast<int>(chunks[i].tokens.size());
        if (job->prefilled == static_cast<int>(job->job->request.prompt.size())) finish_prefill(*job, row);
      } else {
        ++job->seqs[static_cast<std::size_t>(index)].pos;
        on_logits(*job, index, row);
      }
    } catch (const std::exception& e) {
      if (is_device_failure(e)) throw;
      log::warn("a request failed while its tokens were taken: " + describe(e));
      fail(*job, JobError::internal, "the model failed on this request");
    }
  }
}

// The cache writes are idempotent and the kernels batch-invariant: running the rows in two
// halves gives the same results as running them together.
void Batcher::run_halves(std::vector<model::SequenceChunk>& chunks, std::vector<Row>& rows) {
  const auto half = static_cast<std::ptrdiff_t>(chunks.size() / 2);
  for (auto [b, e2] : {std::pair<std::ptrdiff_t, std::ptrdiff_t>{0, half},
                       {half, static_cast<std::ptrdiff_t>(chunks.size())}}) {
    std::vector<model::SequenceChunk> c(chunks.begin() + b, chunks.begin() + e2);
    std::vector<Row> r(rows.begin() + b, rows.begin() + e2);
    at::Tensor l;
    run_rows(c, r, l);
  }
}

void Batcher::fail(Active& a, JobError error, const std::string& message) {
  if (a.failed) return;
  a.failed = true;
  a.error = error;
  a.message = message;
}

void Batcher::probe() {
  if (free_.empty()) return;
  std::vector<model::SequenceChunk> chunks{{free_.back(), 0, {model_->config().eos_token_id}}};
  if (options_.before_forward) options_.before_forward(steps_, chunks);
  const auto logits = model_->forward(chunks, cache_);
  if (logits.size(0) != 1) throw std::runtime_error("the probe's forward pass returned no logits");
}

void Batcher::finish_prefill(Active& a, const float* logits) {
  const int prompt_len = static_cast<int>(a.job->request.prompt.size());
  for (std::size_t i = 1; i < a.seqs.size(); ++i) cache_.copy_prefix(a.seqs[0].slot, a.seqs[i].slot, prompt_len);
  a.decoding = true;
  for (std::size_t i = 0; i < a.seqs.size(); ++i) {
    a.seqs[i].pos = prompt_len;
    on_logits(a, static_cast<int>(i), logits);
  }
}

void Batcher::on_logits(Active& a, int index, const float* logits) {
  auto& s = a.seqs[static_cast<std::size_t>(index)];
  if (s.done) return;
  const auto& p = a.job->request.params;
  if (s.drawn == kSampleFailed) {
    s.drawn = -1;
    throw std::runtime_error("sampling failed: " + s.error);
  }
  const int token = s.drawn >= 0 ? std::exchange(s.drawn, -1)
                                  : s.sampler.sample({logits, static_cast<std::size_t>(sample_vocab_)});
  const auto now = Clock::now();
  if (a.first && options_.first_token_seconds) {
    options_.first_token_seconds->observe(std::chrono::duration<double>(now - a.job->submitted).count());
  } else if (s.last_time != Clock::time_point{} && options_.token_seconds) {
    options_.token_seconds->observe(std::chrono::duration<double>(now - s.last_time).count());
  }
  a.first = false;
  s.last_time = now;
  if (options_.tokens_total) options_.tokens_total->inc();
  if (a.job->sink) {  // TEMPORARY shim: typed outputs; the output processor owns text and stop strings
    if (token == model_->config().eos_token_id) {
      s.done = true;
      return emit(a, index, token, FinishReason::eos);
    }
    s.out.tokens.push_back(token);
    s.last = token;
    s.done = static_cast<int>(s.out.tokens.size()) >= p.max_tokens;
    return emit(a, index, token, s.done ? FinishReason::length : FinishReason::none);
  }
  if (token == model_->config().eos_token_id) {
    s.done = true;
    s.out.finish_reason = "stop";
    generate::append_until_stop(s.out.text, s.decoder.flush(), p.stop);
    return;
  }
  s.out.tokens.push_back(token);
  s.last = token;
  const std::string piece = s.decoder.push(token);
  if (generate::append_until_stop(s.out.text, piece, p.stop)) {
    s.done = true;
    s.out.finish_reason = "stop";
  } else if (static_cast<int>(s.out.tokens.size()) >= p.max_tokens) {
    s.done = true;
    s.out.finish_reason = "length";
    generate::append_until_stop(s.out.text, s.decoder.flush(), p.stop);
  }
  if (a.job->callbacks.on_token) a.job->callbacks.on_token(index, token, piece);
}

// TEMPORARY (h-output shim, dropped when the engine rewrite replaces this file): one output.
void Batcher::emit(Active& a, int index, int token, FinishReason finish) {
  TokenOutput o;
  o.index = index;
  o.token = token;
  o.finish = finish;
  a.job->sink->on_outputs({&o, 1});
}

void Batcher::release(Active& a) {
  for (auto& s : a.seqs) free_.push_back(s.slot);
  a.seqs.clear();
}

void Batcher::retire() {
  running_ = 0;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    Active& a = **it;
    if (!a.finished()) {
      for (const auto& s : a.seqs) running_ += s.done ? 0 : 1;
      ++it;
      continue;
    }
    auto job = a.job;
    std::vector<generate::GeneratedSequence> results;
    for (auto& s : a.seqs) results.push_back(std::move(s.out));
    const bool failed = a.failed;
    const auto error = a.error;
    const auto message = a.message;
    release(a);
    it = jobs_.erase(it);
    try {
      if (job->sink) {  // TEMPORARY shim: every sequence's end was emitted already
        if (failed) job->sink->on_error(error, message);
      } else if (failed) {
        if (job->callbacks.on_error) job->callbacks.on_error(error, message);
      } else if (job->callbacks.on_done) {
        job->callbacks.on_done(std::move(results));
      }
    } catch (const std::exception& e) {  // the job is gone: nothing else to do but say so
      log::error(std::string("a job's completion callback threw: ") + e.what());
    }
  }
}

void Batcher::fail_all(JobError reason, const std::string& message) {
  for (auto& a : jobs_) {
    a->failed = false;  // the reason given here wins over an earlier one
    fail(*a, reason, message);
  }
  retire();
}

}  // namespace writeup::engine

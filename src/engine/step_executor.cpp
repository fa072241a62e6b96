#include "writeup/engine/step_executor.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <stdexcept>

#include "writeup/engine/device_failure.hpp"
#include "writeup/generate/sampler.hpp"
#include "writeup/metrics/registry.hpp"
#include "writeup/model/device.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::engine {

struct StepExecutor::Entry {
  std::vector<generate::Sampler> samplers;  // one per sequence
  int logprobs = 0;                         // alternatives reported with each token
  Clock::time_point submitted;
  bool first = true;                        // no token yet (time to first token)
  std::vector<Clock::time_point> last;      // each sequence's last token (inter-token time)
  std::vector<std::pair<int, float>> bias;  // SamplingParams::logit_bias (ids < vocab, checked by the scheduler)
  // GenerationRequest::prompt_logprobs: the prompt, and what its prefill chunks scored so far
  // (position p - 1 holds prompt token p's), handed to the scheduler once, with the last chunk.
  bool prompt_logprobs = false;
  bool prompt_sent = false;
  std::vector<int> prompt;
  std::vector<TokenOutput> prompt_out;
};

int sampled_vocab(const model::GPT2Model& model, const text::BpeTokenizer& tokenizer) {
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

std::size_t kv_slot_bytes(const model::GPT2Model& model) {
  const auto& c = model.config();
  return 2ull * static_cast<std::size_t>(c.n_layer) * static_cast<std::size_t>(c.n_positions) *
         static_cast<std::size_t>(c.n_embd) * c10::elementSize(model.dtype());
}

StepExecutor::StepExecutor(std::shared_ptr<const model::GPT2Model> model, int slots, int prefill_chunk, int vocab,
                           ExecutorHooks hooks)
    : model_(std::move(model)), vocab_(vocab), hooks_(std::move(hooks)) {
  model::RunnerOptions o;
  o.slots = slots;
  o.max_step_tokens = slots + std::max(1, prefill_chunk);
  runner_ = std::make_unique<model::ModelRunner>(model_, o);
}

StepExecutor::~StepExecutor() = default;

std::size_t StepExecutor::kv_cache_bytes() const { return runner_->kv_cache_bytes(); }

void StepExecutor::add(RequestId id, const generate::GenerationRequest& request, Clock::time_point submitted) {
  auto e = std::make_unique<Entry>();
  e->samplers.reserve(static_cast<std::size_t>(std::max(0, request.n)));
  for (int i = 0; i < request.n; ++i) e->samplers.emplace_back(request.params, i, request.prompt);
  e->logprobs = std::clamp(request.logprobs, 0, kMaxTopLogprobs);
  e->submitted = submitted;
  e->last.assign(e->samplers.size(), Clock::time_point{});
  e->bias = request.params.logit_bias;
  if (request.prompt_logprobs) {
    e->prompt_logprobs = true;
    e->prompt = request.prompt;
    e->prompt_out.resize(request.prompt.empty() ? 0 : request.prompt.size() - 1);
  }
  entries_[id] = std::move(e);
}

void StepExecutor::remove(RequestId id) { entries_.erase(id); }

void StepExecutor::execute(Scheduler& scheduler, const StepPlan& plan) {
  for (const auto& c : plan.copies) runner_->copy_prefix(c.from, c.to, c.tokens);
  if (plan.rows.empty()) return;
  ++steps_;
  run(scheduler, plan.rows);
}

// Runs the rows; on a device OOM the scheduler cuts them in halves, run one after the other
// (the cache writes are idempotent and the packed kernels batch-invariant, so the results are
// the same). A single row that still fails fails its request.
void StepExecutor::run(Scheduler& scheduler, std::vector<PlannedRow> rows) {
  std::vector<model::SequenceChunk> chunks;
  chunks.reserve(rows.size());
  for (const auto& r : rows) chunks.push_back(r.chunk);
  at::Tensor logits;
  try {
    if (hooks_.before_forward) hooks_.before_forward(steps_, chunks);
    logits = runner_->step(chunks);  // [rows, V]
    score_prompts(scheduler, rows);  // only rows that kept their hidden states (prompt logprobs)
  } catch (const c10::OutOfMemoryError&) {
    if (hooks_.oom_total) hooks_.oom_total->inc();
    model::empty_device_cache(model_->device());  // hand cached blocks back before retrying
    if (rows.size() == 1) log::warn("out of memory for one sequence on its own: failing its request");
    else log::warn("out of memory for " + std::to_string(rows.size()) + " rows: retrying in halves");
    for (auto& part : scheduler.split_out_of_memory(std::move(rows))) run(scheduler, std::move(part));
    return;
  } catch (const std::exception& e) {
    if (is_device_failure(e)) throw;  // the worker's problem: it fails every job and probes
    // Something in one request's rows: find it by halving, so that the others still run.
    log::warn("a forward pass of " + std::to_string(rows.size()) + " rows failed: " + describe(e));
    for (auto& part : scheduler.split_failed(std::move(rows), ErrorKind::internal, "the model failed on this request")) {
      run(scheduler, std::move(part));
    }
    return;
  }
  sample(scheduler, rows, logits);
}

// The prompt logprobs of the prefill chunks that kept their hidden states: chunk positions
// p <= T-2 give prompt token p+1's log-probability. Stored by position, so a chunk run again
// (an OOM split, a bisection) only writes the same values again.
void StepExecutor::score_prompts(Scheduler& scheduler, const std::vector<PlannedRow>& rows) {
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& chunk = rows[i].chunk;
    if (!chunk.keep_hidden) continue;
    const auto it = entries_.find(rows[i].request);
    if (it == entries_.end() || !it->second->prompt_logprobs || it->second->prompt_sent ||
        !scheduler.running(rows[i].request)) {
      continue;
    }
    Entry& e = *it->second;
    const int size = static_cast<int>(e.prompt.size());
    const int end = std::min(chunk.start + static_cast<int>(chunk.tokens.size()), size - 1);
    const int m = end - chunk.start;
    if (m <= 0) continue;
    const std::span<const int> targets(e.prompt.data() + chunk.start + 1, static_cast<std::size_t>(m));
    const auto scores = runner_->score(i, 0, targets, vocab_, e.bias, e.logprobs);
    const float* lp = scores.logprobs.data_ptr<float>();
    const float* top_lp = e.logprobs > 0 ? scores.top_logprobs.data_ptr<float>() : nullptr;
    const std::int64_t* top_ids = e.logprobs > 0 ? scores.top_ids.data_ptr<std::int64_t>() : nullptr;
    for (int j = 0; j < m; ++j) {
      TokenOutput& out = e.prompt_out[static_cast<std::size_t>(chunk.start + j)];
      out = TokenOutput{};
      out.token = targets[static_cast<std::size_t>(j)];
      out.logprob = lp[j];
      out.n_top = static_cast<std::uint8_t>(e.logprobs);
      for (int k = 0; k < e.logprobs; ++k) {
        const auto at = static_cast<std::size_t>(j) * static_cast<std::size_t>(e.logprobs) + static_cast<std::size_t>(k);
        out.top[static_cast<std::size_t>(k)] = {static_cast<int>(top_ids[at]), top_lp[at]};
      }
    }
  }
}

void StepExecutor::sample(Scheduler& scheduler, const std::vector<PlannedRow>& rows, const at::Tensor& step_logits) {
  const at::Tensor logits = step_logits.contiguous();
  const auto stride = logits.size(1);
  float* base = logits.data_ptr<float>();
  const auto vocab = static_cast<std::size_t>(vocab_);
  struct Work {
    std::size_t row;
    int index;
    generate::Sampler* sampler;
    int token = -1;
    std::string error;
  };
  std::vector<Work> work;
  std::vector<Entry*> entry(rows.size(), nullptr);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto it = entries_.find(rows[i].request);
    if (it == entries_.end() || !scheduler.running(rows[i].request)) continue;
    entry[i] = it->second.get();
    // logit_bias: added to the row (the step's own memory) before anything reads it: the
    // logprobs, the top alternatives, the penalties and the draw all see it.
    if (!entry[i]->bias.empty() && !rows[i].samples.empty()) {
      float* row = base + static_cast<std::int64_t>(i) * stride;
      for (const auto& [id, value] : entry[i]->bias) {
        if (id >= 0 && id < vocab_) row[id] += value;
      }
    }
    for (const int s : rows[i].samples) work.push_back({i, s, &entry[i]->samplers[static_cast<std::size_t>(s)], -1, {}});
  }
  // Each sampler is its own sequence's state: drawing in parallel gives the tokens a serial
  // pass would.
  at::parallel_for(0, static_cast<std::int64_t>(work.size()), 1, [&](std::int64_t b, std::int64_t e) {
    for (auto w = b; w < e; ++w) {
      auto& item = work[static_cast<std::size_t>(w)];
      try {
        item.token = item.sampler->sample({base + static_cast<std::int64_t>(item.row) * stride, vocab});
      } catch (const std::exception& ex) {  // this sequence's problem: its request fails, no other
        item.error = ex.what();
      }
    }
  });
  // The model's log-probabilities over the tokenizer's ids: one log-sum-exp per row.
  at::Tensor lse;
  const float* lse_row = nullptr;
  if (!work.empty()) {
    lse = at::logsumexp(logits.narrow(1, 0, vocab_), {1}).contiguous();
    lse_row = lse.data_ptr<float>();
  }
  const auto now = Clock::now();
  std::size_t w = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (!entry[i]) continue;
    Entry& e = *entry[i];
    const float* row = base + static_cast<std::int64_t>(i) * stride;
    std::vector<TokenOutput> outputs;
    std::string error;
    TokenOutput top_template;
    if (e.logprobs > 0 && !rows[i].samples.empty()) {
      const auto top = at::topk(logits[static_cast<std::int64_t>(i)].narrow(0, 0, vocab_), e.logprobs);
      const auto values = std::get<0>(top).contiguous();
      const auto ids = std::get<1>(top).contiguous();
      top_template.n_top = static_cast<std::uint8_t>(e.logprobs);
      for (int k = 0; k < e.logprobs; ++k) {
        top_template.top[static_cast<std::size_t>(k)] = {static_cast<int>(ids.data_ptr<std::int64_t>()[k]),
                                                         values.data_ptr<float>()[k] - lse_row[i]};
      }
    }
    for (const int s : rows[i].samples) {
      auto& item = work[w++];
      if (!item.error.empty()) {
        error = item.error;
        continue;
      }
      TokenOutput out = top_template;
      out.index = s;
      out.token = item.token;
      out.logprob = row[item.token] - lse_row[i];
      outputs.push_back(out);
      auto& last = e.last[static_cast<std::size_t>(s)];
      if (e.first && hooks_.first_token_seconds) {
        hooks_.first_token_seconds->observe(std::chrono::duration<double>(now - e.submitted).count());
      } else if (last != Clock::time_point{} && hooks_.token_seconds) {
        hooks_.token_seconds->observe(std::chrono::duration<double>(now - last).count());
      }
      e.first = false;
      last = now;
      if (hooks_.tokens_total) hooks_.tokens_total->inc();
    }
    if (!error.empty()) {
      log::warn("sampling failed: " + error);
      scheduler.fail(rows[i].request, ErrorKind::internal, "sampling failed: " + error);
      continue;
    }
    if (e.prompt_logprobs && !e.prompt_sent &&
        rows[i].chunk.start + static_cast<int>(rows[i].chunk.tokens.size()) == static_cast<int>(e.prompt.size())) {
      e.prompt_sent = true;  // once: a row run again later finds it sent
      scheduler.prompt_logprobs(rows[i].request, std::move(e.prompt_out));
      e.prompt_out = {};
    }
    scheduler.complete(rows[i], std::move(outputs));
  }
}

void StepExecutor::probe(int slot) {
  if (slot < 0) return;
  std::vector<model::SequenceChunk> chunks{{slot, 0, {model_->config().eos_token_id}}};
  if (hooks_.before_forward) hooks_.before_forward(steps_, chunks);
  const auto logits = runner_->step(chunks);
  if (logits.size(0) != 1) throw std::runtime_error("the probe's forward pass returned no logits");
}

}  // namespace writeup::engine

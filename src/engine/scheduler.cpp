#include "writeup/engine/scheduler.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace writeup::engine {

namespace {

std::string mib(std::size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

int slots_within_budget(int slots, int min_slots, std::size_t budget_bytes, std::size_t slot_bytes, int positions) {
  if (budget_bytes == 0 || slot_bytes == 0) return slots;
  const int fit = static_cast<int>(std::min<std::size_t>(budget_bytes / slot_bytes, static_cast<std::size_t>(slots)));
  if (fit < min_slots) {
    throw std::invalid_argument("the KV-cache budget of " + mib(budget_bytes) + " holds " + std::to_string(fit) +
                                " sequence(s) of " + std::to_string(positions) + " positions (" + mib(slot_bytes) +
                                " each), but requests may ask for " + std::to_string(min_slots) +
                                " at once: raise kv_cache_mb");
  }
  return fit;
}

Scheduler::Scheduler(SchedulerOptions options, ModelLimits limits) : options_(options), limits_(limits) {
  options_.prefill_chunk = std::max(1, options_.prefill_chunk);
  for (int i = options_.slots - 1; i >= 0; --i) free_.push_back(i);
}

std::string Scheduler::invalid_reason(const generate::GenerationRequest& r) const {
  if (r.n < 1 || r.n > options_.slots) {
    return "n = " + std::to_string(r.n) + " exceeds the " + std::to_string(options_.slots) +
           " sequences this worker runs at once";
  }
  if (r.prompt.empty()) return "prompt is empty";
  for (const int id : r.prompt) {
    if (id < 0 || id >= limits_.vocab) {
      return "prompt token id " + std::to_string(id) + " is outside the tokenizer's " + std::to_string(limits_.vocab) +
             " tokens";
    }
  }
  for (const auto& [id, bias] : r.params.logit_bias) {
    if (id < 0 || id >= limits_.vocab) {
      return "logit_bias token id " + std::to_string(id) + " is outside the tokenizer's " +
             std::to_string(limits_.vocab) + " tokens";
    }
  }
  if (static_cast<long>(r.prompt.size()) + r.params.max_tokens > limits_.context) {
    return "prompt (" + std::to_string(r.prompt.size()) + " tokens) + max_tokens (" +
           std::to_string(r.params.max_tokens) + ") exceeds the model context of " + std::to_string(limits_.context);
  }
  return {};
}

bool Scheduler::add(RequestId id, const generate::GenerationRequest& request, Clock::time_point deadline) {
  if (auto reason = invalid_reason(request); !reason.empty()) {
    auto& n = notice(id);
    n.failed = true;
    n.error = ErrorKind::invalid;
    n.message = std::move(reason);
    n.ended = true;
    return true;
  }
  if (static_cast<int>(waiting_.size()) >= options_.max_queue) return false;
  Request r;
  r.id = id;
  r.prompt = request.prompt;
  r.n = request.n;
  r.max_tokens = request.params.max_tokens;
  r.prompt_logprobs = request.prompt_logprobs;
  r.deadline = deadline;
  r.seqs.resize(static_cast<std::size_t>(r.n));
  waiting_.push_back(std::move(r));
  return true;
}

Notice& Scheduler::notice(RequestId id) {
  const auto [it, fresh] = notice_index_.try_emplace(id, notices_.size());
  if (fresh) {
    notices_.emplace_back();
    notices_.back().request = id;
  }
  return notices_[it->second];
}

std::vector<Notice> Scheduler::take_notices() {
  for (auto& n : notices_) {
    std::stable_sort(n.outputs.begin(), n.outputs.end(),
                     [](const TokenOutput& a, const TokenOutput& b) { return a.index < b.index; });
  }
  notice_index_.clear();
  return std::exchange(notices_, {});
}

std::list<Scheduler::Request>::iterator Scheduler::find_running(RequestId id) {
  return std::find_if(running_.begin(), running_.end(), [id](const Request& r) { return r.id == id; });
}

bool Scheduler::running(RequestId id) const {
  return std::any_of(running_.begin(), running_.end(), [id](const Request& r) { return r.id == id; });
}

bool Scheduler::known(RequestId id) const {
  return running(id) ||
         std::any_of(waiting_.begin(), waiting_.end(), [id](const Request& r) { return r.id == id; });
}

int Scheduler::running_sequences() const {
  int n = 0;
  for (const auto& r : running_) {
    for (const auto& s : r.seqs) n += s.done ? 0 : 1;
  }
  return n;
}

void Scheduler::end_sequence(Request& r, int index, FinishReason reason) {
  auto& s = r.seqs[static_cast<std::size_t>(index)];
  if (s.done) return;
  s.done = true;
  TokenOutput out;
  out.index = index;
  out.finish = reason;
  notice(r.id).outputs.push_back(out);
}

void Scheduler::finish(std::list<Request>::iterator it) {
  for (const auto& s : it->seqs) {
    if (s.slot >= 0) free_.push_back(s.slot);
  }
  notice(it->id).ended = true;
  running_.erase(it);
}

void Scheduler::retire() {
  for (auto it = running_.begin(); it != running_.end();) {
    const auto next = std::next(it);
    if (std::all_of(it->seqs.begin(), it->seqs.end(), [](const Sequence& s) { return s.done; })) finish(it);
    it = next;
  }
}

void Scheduler::cancel(RequestId id) {
  const auto w = std::find_if(waiting_.begin(), waiting_.end(), [id](const Request& r) { return r.id == id; });
  if (w != waiting_.end()) {
    for (auto& s : w->seqs) s.done = false;  // a stop flagged while it waited gave no output yet
    for (int i = 0; i < w->n; ++i) end_sequence(*w, i, FinishReason::cancelled);
    notice(id).ended = true;
    waiting_.erase(w);
    return;
  }
  const auto it = find_running(id);
  if (it == running_.end()) return;
  for (int i = 0; i < it->n; ++i) end_sequence(*it, i, FinishReason::cancelled);
  finish(it);
}

void Scheduler::stop(RequestId id, int index) {
  const auto it = find_running(id);
  if (it != running_.end()) {
    if (index < 0 || index >= it->n) return;
    end_sequence(*it, index, FinishReason::stop);
    retire();
    return;
  }
  // Still waiting: it ends as soon as it is admitted (before running anything).
  for (auto& r : waiting_) {
    if (r.id == id && index >= 0 && index < r.n) r.seqs[static_cast<std::size_t>(index)].done = true;
  }
}

void Scheduler::fail(std::list<Request>::iterator it, ErrorKind kind, const std::string& message) {
  auto& n = notice(it->id);
  n.failed = true;
  n.error = kind;
  n.message = message;
  finish(it);
}

void Scheduler::fail(RequestId id, ErrorKind kind, const std::string& message) {
  const auto w = std::find_if(waiting_.begin(), waiting_.end(), [id](const Request& r) { return r.id == id; });
  if (w != waiting_.end()) {
    auto& n = notice(id);
    n.failed = true;
    n.error = kind;
    n.message = message;
    n.ended = true;
    waiting_.erase(w);
    return;
  }
  if (const auto it = find_running(id); it != running_.end()) fail(it, kind, message);
}

void Scheduler::fail_running(ErrorKind kind, const std::string& message) {
  while (!running_.empty()) fail(running_.begin(), kind, message);
}

void Scheduler::fail_all(ErrorKind kind, const std::string& message) {
  fail_running(kind, message);
  while (!waiting_.empty()) fail(waiting_.front().id, kind, message);
}

StepPlan Scheduler::plan(Clock::time_point now) {
  // Deadlines: a request that passed its own leaves, waiting or running.
  const std::string late = "the request took longer than its timeout";
  for (auto it = running_.begin(); it != running_.end();) {
    const auto next = std::next(it);
    if (now > it->deadline) fail(it, ErrorKind::timeout, late);
    it = next;
  }
  std::vector<RequestId> expired;
  for (const auto& r : waiting_) {
    if (now > r.deadline) expired.push_back(r.id);
  }
  for (const auto id : expired) fail(id, ErrorKind::timeout, late);

  // Admission, FIFO: the head waits for its n slots and nothing overtakes it.
  while (!waiting_.empty() && waiting_.front().n <= static_cast<int>(free_.size())) {
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    auto& a = running_.back();
    for (int i = 0; i < a.n; ++i) {
      auto& s = a.seqs[static_cast<std::size_t>(i)];
      s.slot = free_.back();
      free_.pop_back();
      if (s.done) {  // stopped while it waited: it ends now, without running
        s.done = false;
        end_sequence(a, i, FinishReason::stop);
      }
    }
  }
  retire();

  StepPlan plan;
  for (auto& r : running_) {
    if (!r.decoding) continue;
    if (!r.copied) {
      for (std::size_t i = 1; i < r.seqs.size(); ++i) {
        if (!r.seqs[i].done) {
          plan.copies.push_back({r.seqs[0].slot, r.seqs[i].slot, static_cast<int>(r.prompt.size())});
        }
      }
      r.copied = true;
    }
    for (std::size_t i = 0; i < r.seqs.size(); ++i) {
      const auto& s = r.seqs[i];
      if (s.done) continue;
      plan.rows.push_back({r.id, {s.slot, s.pos, {s.last}}, {static_cast<int>(i)}});
    }
  }
  // Prompt chunks, first come first served, up to prefill_chunk tokens in all: short prompts
  // arriving together start together. A prompt is cut at multiples of prefill_chunk whatever
  // else waits; a chunk that does not fit waits a step, and nothing overtakes it.
  const int chunk = options_.prefill_chunk;
  int budget = chunk;
  for (auto& r : running_) {
    if (r.decoding) continue;
    const int size = static_cast<int>(r.prompt.size());
    const int n = std::min(chunk, size - r.prefilled);
    if (n > budget) break;
    PlannedRow row;
    row.request = r.id;
    row.chunk = {r.seqs[0].slot, r.prefilled,
                 std::vector<int>(r.prompt.begin() + r.prefilled, r.prompt.begin() + r.prefilled + n)};
    // Prompt logprobs: positions 0..T-2 each give the next prompt token's (the last one samples).
    row.chunk.keep_hidden = r.prompt_logprobs && r.prefilled <= size - 2;
    if (r.prefilled + n == size) {
      for (int i = 0; i < r.n; ++i) {
        if (!r.seqs[static_cast<std::size_t>(i)].done) row.samples.push_back(i);
      }
    }
    plan.rows.push_back(std::move(row));
    budget -= n;
  }
  return plan;
}

void Scheduler::complete(const PlannedRow& row, std::vector<TokenOutput> sampled) {
  const auto it = find_running(row.request);
  if (it == running_.end()) return;
  Request& r = *it;
  std::vector<bool> fresh(r.seqs.size(), false);  // the sequences this row advanced
  if (!r.decoding) {
    if (row.chunk.start != r.prefilled) return;  // not the chunk this request waits for
    r.prefilled += static_cast<int>(row.chunk.tokens.size());
    if (r.prefilled < static_cast<int>(r.prompt.size())) return;
    r.decoding = true;
    for (auto& s : r.seqs) s.pos = r.prefilled;
    for (const int i : row.samples) fresh[static_cast<std::size_t>(i)] = true;
  } else {
    for (const int i : row.samples) {
      auto& s = r.seqs[static_cast<std::size_t>(i)];
      if (!s.done && s.pos == row.chunk.start) {
        ++s.pos;
        fresh[static_cast<std::size_t>(i)] = true;
      }
    }
  }
  for (auto& out : sampled) {
    if (out.index < 0 || out.index >= r.n || !fresh[static_cast<std::size_t>(out.index)]) continue;
    auto& s = r.seqs[static_cast<std::size_t>(out.index)];
    if (s.done) continue;
    if (out.token == limits_.eos_token) {
      out.finish = FinishReason::eos;
    } else {
      ++s.generated;
      s.last = out.token;
      out.finish = s.generated >= r.max_tokens ? FinishReason::length : FinishReason::none;
    }
    s.done = out.finish != FinishReason::none;
    notice(r.id).outputs.push_back(out);
  }
  if (std::all_of(r.seqs.begin(), r.seqs.end(), [](const Sequence& s) { return s.done; })) finish(it);
}

void Scheduler::prompt_logprobs(RequestId id, std::vector<TokenOutput> prompt) {
  if (!running(id)) return;
  auto& n = notice(id);
  n.has_prompt_logprobs = true;
  n.prompt_logprobs = std::move(prompt);
}

std::vector<std::vector<PlannedRow>> Scheduler::halves(std::vector<PlannedRow> rows) const {
  std::erase_if(rows, [this](const PlannedRow& row) { return !running(row.request); });
  if (rows.empty()) return {};
  if (rows.size() == 1) return {std::move(rows)};
  const auto half = static_cast<std::ptrdiff_t>(rows.size() / 2);
  std::vector<std::vector<PlannedRow>> out(2);
  out[0].assign(std::make_move_iterator(rows.begin()), std::make_move_iterator(rows.begin() + half));
  out[1].assign(std::make_move_iterator(rows.begin() + half), std::make_move_iterator(rows.end()));
  return out;
}

std::vector<std::vector<PlannedRow>> Scheduler::split_out_of_memory(std::vector<PlannedRow> rows) {
  return split_failed(std::move(rows), ErrorKind::out_of_memory, "the device ran out of memory for this request");
}

std::vector<std::vector<PlannedRow>> Scheduler::split_failed(std::vector<PlannedRow> rows, ErrorKind kind,
                                                             const std::string& message) {
  auto parts = halves(std::move(rows));
  if (parts.size() == 1) {  // one row that fails on its own: its request fails
    fail(parts[0][0].request, kind, message);
    return {};
  }
  return parts;
}

}  // namespace writeup::engine

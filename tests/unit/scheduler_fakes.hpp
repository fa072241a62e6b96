#pragma once
// Fakes for the scheduler's tests: requests, limits and step outputs without a model.
#include <functional>
#include <map>
#include <vector>

#include "writeup/engine/scheduler.hpp"

namespace writeup::test::sched {

using namespace writeup::engine;
using Clock = Scheduler::Clock;
using writeup::generate::GenerationRequest;

inline constexpr int kEos = 99;
inline const ModelLimits kLimits{64, 100, kEos};  // context, vocabulary, EOS
inline const Clock::time_point t0{};

inline SchedulerOptions options(int slots = 4, int chunk = 4, int max_queue = 8) {
  SchedulerOptions o;
  o.slots = slots;
  o.prefill_chunk = chunk;
  o.max_queue = max_queue;
  return o;
}

inline GenerationRequest req(int prompt_len, int n = 1, int max_tokens = 3) {
  GenerationRequest r;
  for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(1 + i % 50);
  r.n = n;
  r.params.max_tokens = max_tokens;
  return r;
}

// Completes every row of `plan` as a forward pass and the samplers would: each sampling
// sequence gets token(request, index) (7 by default).
inline void complete(Scheduler& s, const StepPlan& plan, const std::function<int(RequestId, int)>& token = {}) {
  for (const auto& row : plan.rows) {
    std::vector<TokenOutput> out;
    for (const int i : row.samples) {
      TokenOutput o;
      o.index = i;
      o.token = token ? token(row.request, i) : 7;
      out.push_back(o);
    }
    s.complete(row, std::move(out));
  }
}

// Rows of `plan` per request: number of rows.
inline std::map<RequestId, int> rows_by_request(const StepPlan& plan) {
  std::map<RequestId, int> m;
  for (const auto& r : plan.rows) ++m[r.request];
  return m;
}

inline const Notice* find(const std::vector<Notice>& notices, RequestId id) {
  for (const auto& n : notices) {
    if (n.request == id) return &n;
  }
  return nullptr;
}

}  // namespace writeup::test::sched

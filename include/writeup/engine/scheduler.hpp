#pragma once
// The engine's scheduling rules in one pure class: no model, no tensors, no threads, no clock
// (time is passed in). The worker feeds it events and executes the plans it returns.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "writeup/engine/output.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/sequence_chunk.hpp"

namespace writeup::engine {

using RequestId = std::uint64_t;

struct SchedulerOptions {
  int slots = 10;                  // sequences decoded together (KV-cache slots)
  // KV-cache memory for this worker; 0 = auto (a quarter of the memory available at load on
  // CPU; on CUDA the configured slots). Every slot holds the model's whole context and the
  // cache is allocated at load, so admission by free slots keeps memory within the budget.
  std::size_t kv_budget_bytes = 0;
  int min_slots = 1;               // fewest slots that serve every allowed request (its max n)
  int prefill_chunk = 128;         // prompt tokens prefilled per step (over one or more waiting
                                   // prompts), so running streams keep flowing
  int max_queue = 64;              // waiting requests beyond which add() refuses
};

// What the scheduler must know of the model.
struct ModelLimits {
  int context = 1024;      // positions per sequence (prompt + generated)
  int vocab = 50257;       // token ids that may appear and be sampled: the tokenizer's
  int eos_token = 50256;
};

// The slots `slots` asks for, capped by `budget_bytes` of KV cache at `slot_bytes` per slot
// (budget 0: no cap). Throws std::invalid_argument naming the sizes when the budget holds
// fewer than `min_slots` sequences of `positions` positions.
int slots_within_budget(int slots, int min_slots, std::size_t budget_bytes, std::size_t slot_bytes, int positions);

// One row of a step: a chunk of one sequence's tokens, and the sequences that sample from the
// logits of its last token (none for a prefill chunk that is not the prompt's last; every
// sequence of the request for the last one; its own sequence for a decode row).
struct PlannedRow {
  RequestId request = 0;
  model::SequenceChunk chunk;
  std::vector<int> samples;  // sequence indices, ascending
};

// Before the rows: copy `tokens` cached positions of slot `from` into slot `to` (a prompt
// shared by n sequences).
struct PrefixCopy {
  int from = 0;
  int to = 0;
  int tokens = 0;
};

struct StepPlan {
  std::vector<PrefixCopy> copies;
  std::vector<PlannedRow> rows;
  bool empty() const { return copies.empty() && rows.empty(); }
};

// What to deliver to one request's sink: its outputs of this step (index order) or its error.
struct Notice {
  RequestId request = 0;
  std::vector<TokenOutput> outputs;
  bool failed = false;
  ErrorKind error = ErrorKind::internal;
  std::string message;
  bool ended = false;  // nothing more comes for this request
  // The prompt's log-probabilities (GenerationRequest::prompt_logprobs), delivered before
  // `outputs`: set once, by the step that prefilled the prompt's last chunk.
  bool has_prompt_logprobs = false;
  std::vector<TokenOutput> prompt_logprobs;
};

// Queues, slots, the prefill chunk policy, cancellation, stops, timeouts, EOS/length and the
// OOM split. FIFO: a request is admitted when its n slots are free, and nothing overtakes the
// head of the queue. Every step decodes one token of every running sequence plus prefill
// chunks of admitted prompts (up to prefill_chunk tokens in all, first come first served; a
// prompt is always cut at multiples of prefill_chunk whatever else waits, so its chunks never
// depend on load). Not thread-safe: one thread (the worker's) calls it.
class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;

  Scheduler(SchedulerOptions options, ModelLimits limits);

  // A new request. False when max_queue requests already wait (nothing is kept). A request
  // that can never run (n vs slots, empty prompt, prompt or logit_bias ids outside the
  // vocabulary, too long) is taken and fails with ErrorKind::invalid in the next notices.
  bool add(RequestId id, const generate::GenerationRequest& request,
           Clock::time_point deadline = Clock::time_point::max());
  // The request's unfinished sequences end as cancelled; a waiting one leaves the queue now.
  void cancel(RequestId id);
  // Sequence `index` ends with FinishReason::stop (the output processor found a stop string).
  void stop(RequestId id, int index);
  // The request fails with `kind` (first reason wins); its slots are free at once.
  void fail(RequestId id, ErrorKind kind, const std::string& message);
  // Every running request fails (a device failure); waiting ones stay queued.
  void fail_running(ErrorKind kind, const std::string& message);
  // Every request fails, waiting ones too (shutdown).
  void fail_all(ErrorKind kind, const std::string& message);

  // Times out what passed its deadline at `now`, admits from the queue, and returns the next
  // step. Empty when nothing runs.
  StepPlan plan(Clock::time_point now);
  // The step's outputs of one row: for each sequence of row.samples, the sampled token (and
  // whatever else the caller filled in: logprob, alternatives). Sets each output's finish
  // (eos, length). Rows of requests that ended meanwhile are ignored.
  void complete(const PlannedRow& row, std::vector<TokenOutput> sampled);
  // The prompt's log-probabilities of a running request (prompt tokens 1..T-1), for its next
  // notice, before its first outputs. Ignored when the request is not running.
  void prompt_logprobs(RequestId id, std::vector<TokenOutput> prompt);
  // The rows ran out of memory: returns them cut in two halves to run one after the other
  // (rows of requests that ended are dropped); a single row fails its request with
  // out_of_memory and nothing is returned.
  std::vector<std::vector<PlannedRow>> split_out_of_memory(std::vector<PlannedRow> rows);
  // The same for an error that is not the device's: halves, or the single row's request
  // fails with `kind` / `message`.
  std::vector<std::vector<PlannedRow>> split_failed(std::vector<PlannedRow> rows, ErrorKind kind,
                                                    const std::string& message);

  // What to deliver since the last call, requests in the order they were touched.
  std::vector<Notice> take_notices();

  bool running(RequestId id) const;  // admitted and not ended
  bool known(RequestId id) const;    // waiting or running
  int free_slots() const { return static_cast<int>(free_.size()); }
  int slots() const { return options_.slots; }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  int running_sequences() const;
  bool idle() const { return waiting_.empty() && running_.empty(); }
  // A free slot for a probe's one-token forward pass; -1 when none.
  int probe_slot() const { return free_.empty() ? -1 : free_.back(); }
  const SchedulerOptions& options() const { return options_; }
  const ModelLimits& limits() const { return limits_; }

 private:
  struct Sequence {
    int slot = -1;
    int pos = 0;        // tokens cached
    int last = -1;      // the token to feed next
    int generated = 0;  // tokens generated (EOS excluded)
    bool done = false;
  };
  struct Request {
    RequestId id = 0;
    std::vector<int> prompt;
    int n = 1;
    int max_tokens = 0;
    Clock::time_point deadline;
    std::vector<Sequence> seqs;  // sized when admitted
    int prefilled = 0;
    bool decoding = false;  // the prompt is cached and the first tokens are sampled
    bool copied = false;    // the prompt was copied to sequences 1..n-1
    bool prompt_logprobs = false;  // its prefill chunks keep their hidden states (scored)
  };

  std::string invalid_reason(const generate::GenerationRequest& request) const;
  Notice& notice(RequestId id);
  void end_sequence(Request& r, int index, FinishReason reason);
  void finish(std::list<Request>::iterator it);            // frees the slots and forgets it
  void fail(std::list<Request>::iterator it, ErrorKind kind, const std::string& message);
  void retire();                                            // running requests whose sequences all ended
  std::list<Request>::iterator find_running(RequestId id);
  std::vector<std::vector<PlannedRow>> halves(std::vector<PlannedRow> rows) const;

  SchedulerOptions options_;
  ModelLimits limits_;
  std::deque<Request> waiting_;
  std::list<Request> running_;  // admission order
  std::vector<int> free_;
  std::vector<Notice> notices_;
  std::unordered_map<RequestId, std::size_t> notice_index_;
};

}  // namespace writeup::engine

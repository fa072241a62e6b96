#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/writeup_protocol.hpp"
#include "writeup/engine/job.hpp"
#include "writeup/service/flight.hpp"
#include "writeup/service/model_registry.hpp"
#include "writeup/service/output_processor.hpp"
#include "writeup/service/request_trace.hpp"
#include "writeup/service/service_options.hpp"

namespace writeup::cache {
class Cache;
}
namespace writeup::metrics {
class Counter;
class Registry;
}  // namespace writeup::metrics

namespace writeup::service {

// A validated, tokenized request ready for a worker.
struct Prepared {
  const ModelEntry* model = nullptr;
  generate::GenerationRequest request;
  int prompt_tokens = 0;     // after any truncation
  int truncated_tokens = 0;  // prompt tokens dropped on the left (writeup protocol only)
  std::string cache_key;     // "" = not cached (no cache configured, or model not loaded)
  OutputOptions output;      // when text streams (the protocol's rule), logprobs
  std::string prompt_text;   // the prompt as text (token-id prompts decoded): what echo returns
  // Filled by start() (cache outcome) for the request's log line; shared by copies.
  std::shared_ptr<RequestTrace> trace = std::make_shared<RequestTrace>();
};

// validate -> cache -> single flight -> engine -> output processor -> stream -> store. Identical requests cost one
// generation: a stored response answers at once; one arriving while an identical one runs
// joins it (in this process), or waits for another instance's (through the Redis lock).
class CompletionService {
 public:
  CompletionService(ServiceOptions options, ModelRegistry& models, metrics::Registry& metrics);
  ~CompletionService();

  // Validate and tokenize; throw api::ApiError (404 unknown model, 400 too long for the
  // OpenAI API; the writeup protocol keeps the most recent tokens instead).
  Prepared prepare(const api::WriteupRequest& request) const;
  // The first (usually only) prompt of an OpenAI request.
  Prepared prepare(const api::CompletionRequest& request) const;
  // Every prompt of an OpenAI request (api::prompt_list), each its own generation of
  // request.candidates() sequences. Token ids (prompt, logit_bias) are checked against the
  // model's vocabulary (400 naming the field). Requests that ask for logprobs or rank best_of
  // are neither cached nor joined: the cache keeps no logprobs.
  std::vector<Prepared> prepare_all(const api::CompletionRequest& request) const;

  // Starts, joins or answers from the cache (a memory hit is answered before this returns, even
  // while the engine is full). Throws api::ApiError 429 queue_full when the cache's claim queue
  // or the worker's queue is full. Events may arrive before this returns. Admission is an
  // event: on_admitted once a worker's queue took the generation (or the flight joined had
  // been), on_done for a stored response, on_error 429 when a cache miss then finds the
  // worker's queue full: a streaming answer waits for one of them before its status line.
  std::shared_ptr<Subscription> start(Prepared prepared, StreamEvents events);

  // Stops the cache's thread: claims still waiting are answered (they find no worker to run
  // on and fail) and stores still queued are sent. Call after the workers stopped (no job
  // callback may run any more), after the output executor was joined (no drain runs) and
  // after the I/O threads stopped (no start()). Idempotent;
  // the destructor calls it, before the flights it touches are destroyed.
  void stop_cache();

  const ModelRegistry& models() const { return models_; }
  const ServiceOptions& options() const { return options_; }

 private:
  const ModelEntry& model(const std::string& name, const std::string& param) const;
  std::string cache_key(std::string_view space, const ModelEntry& m, const std::string& prompt,
                        const generate::GenerationRequest& r) const;
  // Submits the generation; false when the queue is full. When the worker is stopping the
  // flight gets a 503 shutting_down error instead (and true is returned).
  bool run(const std::shared_ptr<Flight>& flight, const Prepared& p, const std::string& lock_token);
  void forget(const std::string& key);  // drops the key's flight once it finished

  ServiceOptions options_;
  ModelRegistry& models_;
  metrics::Registry& metrics_;
  metrics::Counter* local_joins_ = nullptr;
  std::unique_ptr<cache::Cache> cache_;  // null when the config turns caching off
  std::mutex flights_mutex_;
  std::unordered_map<std::string, std::weak_ptr<Flight>> flights_;
};

}  // namespace writeup::service

#include "writeup/service/completion_service.hpp"

#include <random>

#include "writeup/cache/cache.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/metrics/registry.hpp"
#include "writeup/service/cached_response.hpp"
#include "writeup/util/logging.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::service {
namespace {

std::vector<int> encode(const ModelEntry& m, const std::string& prompt) {
  try {
    return m.tokenizer->encode(prompt);
  } catch (const std::invalid_argument& e) {
    throw api::ApiError::bad_request(std::string("prompt: ") + e.what(), "prompt");
  }
}

// A seed for a request that gave none (OpenAI API): from the OS's entropy, per thread.
std::uint64_t random_seed() {
  thread_local std::mt19937_64 rng{(static_cast<std::uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()};
  return rng();
}

}  // namespace

CompletionService::CompletionService(ServiceOptions options, ModelRegistry& models, metrics::Registry& metrics)
    : options_(std::move(options)), models_(models), metrics_(metrics) {
  local_joins_ = &metrics.counter(cache::kJoinsMetric, cache::kJoinsHelp, {{"scope", "local"}});
  if (options_.cache_redis.empty() && options_.cache_memory_entries == 0) return;
  cache::CacheOptions o;
  o.redis_url = options_.cache_redis;
  o.ttl = std::chrono::seconds(options_.cache_ttl_s);
  o.memory_entries = static_cast<std::size_t>(options_.cache_memory_entries);
  o.max_claims = static_cast<std::size_t>(options_.max_queue);  // same bound as the engine queue
  o.lock_max_hold = std::chrono::milliseconds(static_cast<long>(options_.request_timeout_s * 1000)) + o.lock_ttl;
  cache_ = std::make_unique<cache::Cache>(std::move(o), &metrics);
}

// The cache goes first, explicitly: its thread answers the claims still waiting (which call
// run() and forget()), so flights_ and its mutex must still exist then.
CompletionService::~CompletionService() { stop_cache(); }

void CompletionService::stop_cache() {
  // reset() nulls cache_ before the cache is destroyed; the claims its thread still answers then
  // carry no lock token and find the workers stopped (run() reports "shutting down"), so none
  // of them uses cache_.
  if (!cache_) return;
  cache_->flush();  // what the stopped workers and I/O threads posted: stores and releases
  cache_.reset();
}

std::string CompletionService::cache_key(std::string_view space, const ModelEntry& m, const std::string& prompt,
                                         const generate::GenerationRequest& r) const {
  return cache_ ? response_cache_key(space, m.config.name, m.fingerprint(), prompt, r) : std::string();
}

const ModelEntry& CompletionService::model(const std::string& name, const std::string& param) const {
  if (name.empty()) return models_.default_model();
  if (const auto* m = models_.find(name)) return *m;
  throw api::ApiError(404, "model_not_found", "model '" + name + "' does not exist", param);
}

Prepared CompletionService::prepare(const api::WriteupRequest& r) const {
  Prepared p;
  p.model = &model(r.model_name, "model_name");
  // At least one prompt token must fit beside the `length` new ones. The documented range
  // (1-256) fits every GPT-2 context (1024) but not a small model's: answer what is wrong
  // rather than generate fewer tokens than asked under the requested length.
  if (r.length >= p.model->n_positions) {
    throw api::ApiError::bad_request("length (" + std::to_string(r.length) + ") does not fit model '" +
                                         p.model->config.name + "': its context is " +
                                         std::to_string(p.model->n_positions) +
                                         " tokens, so length must be at most " +
                                         std::to_string(p.model->n_positions - 1),
                                     "length");
  }
  auto ids = encode(*p.model, r.prompt);
  // The editor sends the whole document: keep its most recent tokens that fit the context.
  const int room = p.model->n_positions - r.length;
  if (static_cast<int>(ids.size()) > room) {
    p.truncated_tokens = static_cast<int>(ids.size()) - room;
    ids.erase(ids.begin(), ids.begin() + p.truncated_tokens);
  }
  if (ids.empty()) ids.push_back(p.model->eos_token_id);
  p.prompt_tokens = static_cast<int>(ids.size());
  p.request.prompt = std::move(ids);
  p.request.params = api::to_sampling_params(r, options_.default_seed);
  p.request.n = r.batch_size;
  p.output.every_words = options_.stream_every_words;
  p.cache_key = cache_key("writeup", *p.model, r.prompt, p.request);
  return p;
}

Prepared CompletionService::prepare(const api::CompletionRequest& r) const {
  auto all = prepare_all(r);
  return std::move(all.front());
}

std::vector<Prepared> CompletionService::prepare_all(const api::CompletionRequest& r) const {
  const ModelEntry& m = model(r.model, "model");
  const int vocab = m.tokenizer->vocab_size();
  for (const auto& [id, bias] : r.logit_bias) {
    if (id >= vocab) {
      throw api::ApiError::bad_request("logit_bias: token " + std::to_string(id) + " is not in the vocabulary of '" +
                                           m.config.name + "' (" + std::to_string(vocab) + " tokens)",
                                       "logit_bias");
    }
  }
  // An unseeded request that samples draws a fresh seed, as OpenAI's API does, and is then
  // neither cached nor joined (identical seeded requests still are). A greedy one gives the same
  // text whatever the seed: it keeps the default and stays cacheable. Logprobs (and best_of's
  // ranking, which needs them) are not kept by the cache: such requests are not cached either.
  const bool fresh_seed = !r.seed && r.temperature != 0.0f && r.top_p > 0.0f;
  const bool logprobs = r.logprobs.has_value() || r.ranks_best_of();
  std::vector<Prepared> out;
  for (const auto& prompt : api::prompt_list(r)) {
    Prepared p;
    p.model = &m;
    if (prompt.is_tokens) {
      for (const int id : prompt.tokens) {
        if (id >= vocab) {
          throw api::ApiError::bad_request("prompt: token " + std::to_string(id) + " is not in the vocabulary of '" +
                                               m.config.name + "' (" + std::to_string(vocab) + " tokens)",
                                           "prompt");
        }
      }
      p.request.prompt = prompt.tokens;
      p.prompt_text = m.tokenizer->decode(prompt.tokens);
    } else {
      p.request.prompt = encode(m, prompt.text);
      p.prompt_text = prompt.text;
    }
    p.prompt_tokens = static_cast<int>(p.request.prompt.size());
    if (p.prompt_tokens + r.max_tokens > m.n_positions) {
      throw api::ApiError(400, "context_length_exceeded",
                          "this model's maximum context is " + std::to_string(m.n_positions) +
                              " tokens, but the prompt has " + std::to_string(p.prompt_tokens) +
                              " and max_tokens asks for " + std::to_string(r.max_tokens),
                          "prompt");
    }
    p.request.params = api::to_sampling_params(r, fresh_seed ? random_seed() : options_.default_seed);
    p.request.n = r.candidates();
    p.request.logprobs = r.logprobs.value_or(0);
    p.request.prompt_logprobs = r.echo && r.logprobs.has_value();
    p.output.every_words = 0;  // server-sent events: text as soon as it is safe
    p.output.logprobs = logprobs;
    // Token-id prompts key on their ids (two spellings of one text may tokenize alike).
    const std::string key_prompt = prompt.is_tokens ? nlohmann::json(prompt.tokens).dump() : prompt.text;
    if (!fresh_seed && !logprobs) p.cache_key = cache_key(prompt.is_tokens ? "openai-ids" : "openai", m, key_prompt, p.request);
    out.push_back(std::move(p));
  }
  return out;
}

std::shared_ptr<Subscription> CompletionService::start(Prepared p, StreamEvents events) {
  const ServiceError busy(api::ApiError(429, "queue_full", "the server is busy: too many requests are waiting; retry shortly"));
  if (p.cache_key.empty() || !cache_) {
    auto flight = std::make_shared<Flight>(nullptr);
    const auto id = flight->join(std::move(events));
    if (!run(flight, p, "")) throw busy.error;
    return std::make_shared<Subscription>(flight, id);
  }
  const std::string key = p.cache_key;
  std::shared_ptr<Flight> flight;
  std::uint64_t id = 0;
  {
    std::lock_guard lock(flights_mutex_);
    if (auto it = flights_.find(key); it != flights_.end()) {
      if (auto running = it->second.lock()) {
        if ((id = running->join(events)) != 0) {
          local_joins_->inc();
          p.trace->cache = CacheOutcome::join;
          return std::make_shared<Subscription>(running, id);
        }
      }
    }
    // No engine-queue check here: a memory hit must be answered even while the engine is full.
    // A miss that finds the queue full fails in run() below with the same 429.
    flight = std::make_shared<Flight>([this, key] { forget(key); });
    id = flight->join(std::move(events));
    flights_[key] = flight;
  }
  const auto max_wait = std::chrono::milliseconds(static_cast<long>(options_.request_timeout_s * 1000));
  // A memory hit answers here, before claim() returns; anything else waits for the cache's worker.
  const bool accepted = cache_->claim(key, max_wait, [this, flight, p = std::move(p), busy](cache::Claim claim) {
    const auto& key = p.cache_key;
    if (flight->abandoned()) {
      if (!claim.lock_token.empty()) cache_->release(key, claim.lock_token);
      return;
    }
    if (claim.kind == cache::Claim::hit) {
      if (auto results = decode_results(claim.value, p.request.n)) {
        p.trace->cache = CacheOutcome::hit;
        flight->done(*results);
        return forget(key);
      }
      log::warn("cache: the value under " + key + " is not a response of " + std::to_string(p.request.n) +
                " sequence(s); generating it again");
    }
    p.trace->cache = CacheOutcome::miss;
    if (!run(flight, p, claim.lock_token)) {
      if (!claim.lock_token.empty()) cache_->release(key, claim.lock_token);
      flight->error(busy);
      forget(key);
    }
  });
  if (!accepted) {  // max_queue claims already wait for the cache: nothing was queued
    flight->leave(id);    // this caller gets the exception instead of the event
    flight->error(busy);  // anyone who joined the flight meanwhile
    forget(key);
    throw busy.error;
  }
  return std::make_shared<Subscription>(flight, id);
}

bool CompletionService::run(const std::shared_ptr<Flight>& flight, const Prepared& p, const std::string& lock_token) {
  const std::string key = p.cache_key;
  // The processor's events run in its drains (off the engine thread), one at a time.
  OutputEvents events;
  events.on_text = [flight](const std::vector<TextDelta>& deltas) { flight->text(deltas); };
  events.on_done = [this, flight, key, lock_token](const std::vector<generate::GeneratedSequence>& results) {
    if (!key.empty()) {
      if (cacheable(results)) {
        cache_->store(key, encode_results(results), lock_token);
      } else {
        cache_->release(key, lock_token);  // nothing is cached from a cancelled generation
      }
    }
    flight->done(results);
    if (!key.empty()) forget(key);
  };
  events.on_error = [this, flight, key, lock_token](engine::ErrorKind kind, const std::string& message) {
    if (!key.empty()) cache_->release(key, lock_token);
    flight->error(engine_error(kind, message));
    if (!key.empty()) forget(key);
  };
  auto processor = std::make_shared<OutputProcessor>(p.model->tokenizer, p.request, p.output,
                                                     options_.output_executor, std::move(events));
  auto job = std::make_shared<engine::Job>(p.request, processor);
  job->deadline = engine::Job::Clock::now() + std::chrono::duration_cast<engine::Job::Clock::duration>(
                                                  std::chrono::duration<double>(options_.request_timeout_s));
  processor->bind(job);
  auto& worker = p.model->pick();
  if (!worker.submit(job)) {
    if (!worker.stopping()) return false;  // the queue is full: the caller answers 429
    // Stopping (a claim answered while the server shuts down): say so rather than "busy".
    if (!lock_token.empty()) cache_->release(key, lock_token);
    flight->error(engine_error(engine::ErrorKind::shutdown, "the server is stopping"));
    if (!key.empty()) forget(key);
    return true;
  }
  flight->admit();
  metrics_.counter("writeup_generations_total", "Generations run by the engine (cache hits and joins excluded)",
                   {{"model", p.model->config.name}})
      .inc();
  flight->set_job(std::move(job));
  return true;
}

void CompletionService::forget(const std::string& key) {
  std::lock_guard lock(flights_mutex_);
  const auto it = flights_.find(key);
  if (it == flights_.end()) return;
  const auto f = it->second.lock();
  if (!f || f->finished()) flights_.erase(it);
}

}  // namespace writeup::service

#include "writeup/service/completion_service.hpp"

#include "writeup/service/text_stream.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::service {
namespace {

api::ApiError to_api_error(engine::JobError e, const std::string& message) {
  switch (e) {
    case engine::JobError::out_of_memory: return api::ApiError(503, "out_of_memory", message);
    case engine::JobError::invalid: return api::ApiError(400, "invalid_request", message);
    case engine::JobError::timeout: return api::ApiError(503, "timeout", message);
    case engine::JobError::shutdown: return api::ApiError(503, "shutting_down", message);
    case engine::JobError::internal: break;
  }
  return api::ApiError(500, "internal_error", message);
}

std::vector<int> encode(const ModelEntry& m, const std::string& prompt) {
  try {
    return m.tokenizer->encode(prompt);
  } catch (const std::invalid_argument& e) {
    throw api::ApiError::bad_request(std::string("prompt: ") + e.what(), "prompt");
  }
}

}  // namespace

CompletionService::CompletionService(const server::ServerConfig& config, ModelRegistry& models)
    : config_(config), models_(models) {}

const ModelEntry& CompletionService::model(const std::string& name, const std::string& param) const {
  if (name.empty()) return models_.default_model();
  if (const auto* m = models_.find(name)) return *m;
  throw api::ApiError(404, "model_not_found", "model '" + name + "' does not exist", param);
}

Prepared CompletionService::prepare(const api::WriteupRequest& r) const {
  Prepared p;
  p.model = &model(r.model_name, "model_name");
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
  p.request.params = api::to_sampling_params(r, config_.defaults.seed);
  p.request.n = r.batch_size;
  return p;
}

Prepared CompletionService::prepare(const api::CompletionRequest& r) const {
  Prepared p;
  p.model = &model(r.model, "model");
  p.request.prompt = encode(*p.model, r.prompt);
  p.prompt_tokens = static_cast<int>(p.request.prompt.size());
  if (p.prompt_tokens + r.max_tokens > p.model->n_positions) {
    throw api::ApiError(400, "context_length_exceeded",
                        "this model's maximum context is " + std::to_string(p.model->n_positions) +
                            " tokens, but the prompt has " + std::to_string(p.prompt_tokens) +
                            " and max_tokens asks for " + std::to_string(r.max_tokens),
                        "prompt");
  }
  p.request.params = api::to_sampling_params(r, config_.defaults.seed);
  p.request.n = r.n;
  return p;
}

std::shared_ptr<engine::Job> CompletionService::start(Prepared prepared, StreamEvents events) const {
  auto job = std::make_shared<engine::Job>();
  job->request = std::move(prepared.request);
  job->deadline = engine::Job::Clock::now() +
                  std::chrono::duration_cast<engine::Job::Clock::duration>(
                      std::chrono::duration<double>(config_.limits.request_timeout_s));
  struct State {
    std::vector<TextStream> streams;
    std::vector<int> tokens;
  };
  auto state = std::make_shared<State>();
  state->streams.assign(static_cast<std::size_t>(job->request.n), TextStream(job->request.params.stop));
  state->tokens.assign(static_cast<std::size_t>(job->request.n), 0);
  job->callbacks.on_token = [state, events](int index, int, const std::string& piece) {
    const auto i = static_cast<std::size_t>(index);
    ++state->tokens[i];
    const auto delta = state->streams[i].append(piece);
    if (!delta.empty() && events.on_text) events.on_text(index, delta, state->tokens[i]);
  };
  job->callbacks.on_done = [state, events](std::vector<generate::GeneratedSequence> results) {
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto delta = state->streams[i].finish(results[i].text);
      if (!delta.empty() && events.on_text) {
        events.on_text(static_cast<int>(i), delta, static_cast<int>(results[i].tokens.size()));
      }
    }
    if (events.on_done) events.on_done(results);
  };
  job->callbacks.on_error = [events](engine::JobError e, const std::string& message) {
    if (events.on_error) events.on_error(to_api_error(e, message));
  };
  if (!prepared.model->pick().submit(job)) {
    throw api::ApiError(429, "queue_full", "the server is busy: too many requests are waiting; retry shortly");
  }
  return job;
}

}  // namespace writeup::service

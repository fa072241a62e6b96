#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/writeup_protocol.hpp"
#include "writeup/engine/job.hpp"
#include "writeup/service/model_registry.hpp"

namespace writeup::service {

// A validated, tokenized request ready for a worker.
struct Prepared {
  const ModelEntry* model = nullptr;
  generate::GenerationRequest request;
  int prompt_tokens = 0;     // after any truncation
  int truncated_tokens = 0;  // prompt tokens dropped on the left (writeup protocol only)
};

// What a started generation reports; every callback runs on the worker's thread.
struct StreamEvents {
  // New releasable text of sequence `index` (never splits a UTF-8 character or shows part of
  // a stop string); `tokens` is the sequence's token count so far.
  std::function<void(int index, const std::string& delta, int tokens)> on_text;
  std::function<void(const std::vector<generate::GeneratedSequence>&)> on_done;
  std::function<void(const api::ApiError&)> on_error;
};

class CompletionService {
 public:
  CompletionService(const server::ServerConfig& config, ModelRegistry& models);

  // Validate and tokenize; throw api::ApiError (404 unknown model, 400 too long for the
  // OpenAI API; the writeup protocol keeps the most recent tokens instead).
  Prepared prepare(const api::WriteupRequest& request) const;
  Prepared prepare(const api::CompletionRequest& request) const;

  // Queues the generation; throws api::ApiError 429 (with retry hint) when the queue is full.
  std::shared_ptr<engine::Job> start(Prepared prepared, StreamEvents events) const;

  const ModelRegistry& models() const { return models_; }
  const server::ServerConfig& config() const { return config_; }

 private:
  const ModelEntry& model(const std::string& name, const std::string& param) const;

  const server::ServerConfig& config_;
  ModelRegistry& models_;
};

}  // namespace writeup::service

#pragma once
#include <memory>
#include <string>
#include <vector>

#include "writeup/server/config.hpp"

namespace writeup::engine {
class Worker;  // engine/worker.hpp: kept out of this header, which server/ includes (no ATen there)
}
namespace writeup::metrics {
class Registry;
}
namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::service {

// A configured model: its tokenizer (loaded at start, used by the I/O threads), its context
// size, and the workers that each load and run a copy of its weights.
struct ModelEntry {
  server::ModelConfig config;
  std::shared_ptr<const text::BpeTokenizer> tokenizer;
  int n_positions = 1024;
  int eos_token_id = 50256;
  std::vector<std::unique_ptr<engine::Worker>> workers;

  ModelEntry();
  ~ModelEntry();  // out of line: engine::Worker is complete only in model_registry.cpp

  // The ready worker with the shortest queue (ties: the first); when none is ready, one that is
  // still loading or recovering from a device failure; one whose load failed only when all did.
  engine::Worker& pick() const;
  bool ready() const;               // every worker loaded and healthy
  std::string fingerprint() const;  // of the weights file ("" until loaded)
};

class ModelRegistry {
 public:
  // Reads each model's config.json and tokenizer now (throws naming the model on failure) and
  // starts its workers, which load the weights in the background.
  ModelRegistry(const server::ServerConfig& config, metrics::Registry& metrics);
  ~ModelRegistry();

  // By name or alias (ModelConfig::aliases; the config keeps each unique); nullptr when unknown.
  // The entry's config.name is the canonical name.
  const ModelEntry* find(const std::string& name) const;
  const ModelEntry& default_model() const;
  const std::vector<std::unique_ptr<ModelEntry>>& models() const { return models_; }
  bool ready() const;
  void stop();  // fails queued work and joins every worker

 private:
  std::vector<std::unique_ptr<ModelEntry>> models_;
  std::string default_name_;
};

}  // namespace writeup::service

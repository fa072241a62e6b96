#include "writeup/service/model_registry.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>
#include <stdexcept>

#include "writeup/engine/shared_weights.hpp"
#include "writeup/engine/test_hooks.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/metrics/registry.hpp"
#include "writeup/model/device_memory.hpp"
#include "writeup/model/gpt2_config.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::service {

ModelEntry::ModelEntry() = default;
ModelEntry::~ModelEntry() = default;

engine::Worker& ModelEntry::pick() const {
  // Best first: a ready worker; else one that may still serve (loading, or its device failed
  // and it probes); a worker whose load failed only when every one did (it fails the job with
  // the load error). Among equals, the shortest queue; ties: the first.
  const auto rank = [](const engine::Worker& w) {
    if (w.ready()) return 0;
    if (!w.load_ended() || w.loaded()) return 1;
    return 2;
  };
  engine::Worker* best = nullptr;
  int best_rank = 3;
  std::size_t best_depth = 0;
  for (const auto& w : workers) {
    const int r = rank(*w);
    const std::size_t depth = w->queue_depth();
    if (!best || r < best_rank || (r == best_rank && depth < best_depth)) {
      best = w.get();
      best_rank = r;
      best_depth = depth;
    }
  }
  return *best;
}

bool ModelEntry::ready() const {
  for (const auto& w : workers) {
    if (!w->ready()) return false;
  }
  return true;
}

std::string ModelEntry::fingerprint() const {
  return workers.front()->fingerprint();
}

ModelRegistry::ModelRegistry(const server::ServerConfig& config, metrics::Registry& metrics)
    : default_name_(config.defaults.model) {
  const auto buckets = metrics::latency_buckets();
  for (const auto& mc : config.models) {
    auto entry = std::make_unique<ModelEntry>();
    entry->config = mc;
    try {
      const auto cfg = model::GPT2Config::from_file(std::filesystem::path(mc.path) / "config.json");
      entry->n_positions = cfg.n_positions;
      entry->eos_token_id = cfg.eos_token_id;
      entry->tokenizer = text::BpeTokenizer::from_model_dir(mc.path);
    } catch (const std::exception& e) {
      throw std::runtime_error("model '" + mc.name + "': " + e.what());
    }
    const metrics::Labels labels = {{"model", mc.name}};
    const auto weights = engine::shared_weights(mc.path, {mc.device, mc.dtype, true, mc.weights, mc.packed_cache});
    const auto hooks = engine::test_hooks_from_env();
    for (int i = 0; i < mc.workers; ++i) {
      engine::WorkerOptions o;
      o.model_name = mc.name;
      o.path = mc.path;
      o.load = {mc.device, mc.dtype, true, mc.weights, mc.packed_cache};
      o.max_queue = config.limits.max_queue;
      o.scheduler.slots = std::max(mc.max_batch, config.limits.max_batch_size);  // any request must fit
      o.scheduler.min_slots = config.limits.max_batch_size;
      o.scheduler.kv_budget_bytes = static_cast<std::size_t>(mc.kv_cache_mb) << 20;
      o.tokens_total = &metrics.counter("writeup_tokens_generated_total", "Tokens generated", labels);
      o.oom_total = &metrics.counter("writeup_oom_total", "Device out-of-memory failures", labels);
      o.first_token_seconds = &metrics.histogram("writeup_time_to_first_token_seconds",
                                                 "Time from submission to the first token", buckets, labels);
      o.token_seconds = &metrics.histogram("writeup_inter_token_seconds",
                                           "Time between consecutive tokens of a sequence", buckets, labels);
      o.before_forward = hooks;
      o.weights = weights;  // one copy of the weights for all the model's workers
      entry->workers.push_back(std::make_unique<engine::Worker>(std::move(o), entry->tokenizer));
      auto* w = entry->workers.back().get();
      const metrics::Labels wl = {{"model", mc.name}, {"worker", std::to_string(i)}};
      metrics.gauge_callback("writeup_queue_depth", "Requests waiting for a worker", wl,
                             [w] { return static_cast<double>(w->queue_depth()); });
      metrics.gauge_callback("writeup_running_sequences", "Sequences being generated", wl,
                             [w] { return static_cast<double>(w->running_sequences()); });
      metrics.gauge_callback("writeup_kv_cache_slots", "Sequences the worker's KV cache holds at once", wl,
                             [w] { return static_cast<double>(w->slots()); });
      metrics.gauge_callback("writeup_kv_cache_bytes", "Memory of the worker's KV cache", wl,
                             [w] { return w->kv_cache_bytes(); });
      metrics.gauge_callback("writeup_model_load_seconds", "Seconds the worker took to load its model", wl,
                             [w] { return w->load_seconds(); });
      metrics.gauge_callback("writeup_device_memory_allocated_bytes", "Device memory allocated (0 on CPU)", wl,
                             [w] { return static_cast<double>(w->device_memory().allocated); });
      metrics.gauge_callback("writeup_device_memory_reserved_bytes", "Device memory reserved (0 on CPU)", wl,
                             [w] { return static_cast<double>(w->device_memory().reserved); });
    }
    models_.push_back(std::move(entry));
  }
  if (models_.empty()) throw std::invalid_argument("no models configured");
  if (default_name_.empty()) default_name_ = models_.front()->config.name;
}

ModelRegistry::~ModelRegistry() { stop(); }

const ModelEntry* ModelRegistry::find(const std::string& name) const {
  for (const auto& m : models_) {
    if (m->config.name == name) return m.get();
  }
  for (const auto& m : models_) {
    const auto& aliases = m->config.aliases;
    if (std::find(aliases.begin(), aliases.end(), name) != aliases.end()) return m.get();
  }
  return nullptr;
}

const ModelEntry& ModelRegistry::default_model() const {
  const auto* m = find(default_name_);
  return m ? *m : *models_.front();
}

bool ModelRegistry::ready() const {
  for (const auto& m : models_) {
    if (!m->ready()) return false;
  }
  return true;
}

void ModelRegistry::stop() {
  for (const auto& m : models_) {
    for (const auto& w : m->workers) w->stop();
  }
}

}  // namespace writeup::service

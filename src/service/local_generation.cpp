#include "writeup/service/local_generation.hpp"

#include <optional>
#include <stdexcept>
#include <thread>

#include "writeup/engine/run_job.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::service {
namespace {

// Shows each output to the caller's callback, then hands it to the output processor.
class TeeSink final : public engine::JobSink {
 public:
  TeeSink(std::shared_ptr<OutputProcessor> processor, std::function<void(const engine::TokenOutput&)> tap)
      : processor_(std::move(processor)), tap_(std::move(tap)) {}
  void on_outputs(std::span<const engine::TokenOutput> outputs) override {
    if (tap_) {
      for (const auto& o : outputs) tap_(o);
    }
    processor_->on_outputs(outputs);
  }
  void on_error(engine::ErrorKind kind, const std::string& message) override { processor_->on_error(kind, message); }

 private:
  std::shared_ptr<OutputProcessor> processor_;
  std::function<void(const engine::TokenOutput&)> tap_;
};

}  // namespace

LocalEngine::LocalEngine(LocalEngineOptions options)
    : tokenizer_(text::BpeTokenizer::from_model_dir(options.path)) {
  engine::WorkerOptions o;
  o.model_name = options.path;
  o.path = options.path;
  o.load = options.load;
  o.max_queue = 1 << 16;
  o.scheduler.slots = options.slots;
  o.scheduler.min_slots = 1;
  o.scheduler.prefill_chunk = options.prefill_chunk;
  worker_ = std::make_unique<engine::Worker>(std::move(o), tokenizer_);
  while (!worker_->load_ended()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!worker_->loaded()) throw std::runtime_error("the model did not load: " + worker_->load_error());
}

LocalEngine::~LocalEngine() = default;

LocalEngine::Result LocalEngine::run(generate::GenerationRequest request,
                                     std::function<void(const engine::TokenOutput&)> on_output) {
  Result result;
  std::optional<std::pair<engine::ErrorKind, std::string>> error;
  auto processor_slot = std::make_shared<std::weak_ptr<OutputProcessor>>();
  OutputEvents events;
  events.on_done = [&result, processor_slot](const std::vector<generate::GeneratedSequence>& sequences) {
    result.sequences = sequences;
    if (auto p = processor_slot->lock()) {
      for (std::size_t i = 0; i < sequences.size(); ++i) result.logprobs.push_back(p->logprobs(static_cast<int>(i)));
    }
  };
  events.on_error = [&error](engine::ErrorKind kind, const std::string& message) {
    error.emplace(kind, message);
  };
  // Inline executor: the texts are built on the engine's thread, which only this request uses,
  // and are complete when run_job returns.
  auto processor = std::make_shared<OutputProcessor>(tokenizer_, request, OutputOptions{}, Executor{}, events);
  *processor_slot = processor;
  auto job = std::make_shared<engine::Job>(std::move(request), std::make_shared<TeeSink>(processor, std::move(on_output)));
  processor->bind(job);
  if (!engine::run_job(*worker_, job)) throw std::runtime_error("the engine refused the request (queue full or stopping)");
  if (error && error->first == engine::ErrorKind::invalid) throw std::invalid_argument(error->second);
  if (error) {
    throw std::runtime_error(std::string("the request failed (") + engine::to_string(error->first) + "): " + error->second);
  }
  return result;
}

}  // namespace writeup::service

#pragma once
// One generation's output processor: the engine's typed outputs in, texts out. The engine's
// thread only queues (JobSink); the work runs in drains on an executor, one drain at a time:
// incremental UTF-8-safe detokenising, stop strings (applied here and only here: the text is cut
// before the first one and the job is told to end that sequence), when text is released to the
// clients, and the final texts.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "writeup/engine/job.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/service/flight.hpp"
#include "writeup/text/stream_decoder.hpp"

namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::service {

// Runs a task on another thread (a pool, a strand). Empty: tasks run inline on the caller's
// thread (tests and tools only: on the engine thread that is consumer work on the engine).
using Executor = std::function<void(std::function<void()>)>;

struct OutputOptions {
  // When streamed text is released: 0 = as soon as it is safe (no partial character, no text
  // that may still turn out to be a stop string: SSE); N = only when some sequence gained N
  // words since the last release, and then every sequence's safe text (the writeup protocol's
  // updated_response rule). Under every_words the text not yet released at the end comes
  // only with the final texts (on_done).
  int every_words = 0;
  // Report log-probabilities: text is released at token boundaries and each TextDelta carries
  // the tokens whose text it is (a sequence's first one also the prompt's, when the engine
  // reports them); each final GeneratedSequence has its `logprobs` (the tokens of its text:
  // those cut off by a stop string are dropped, one partly before the cut stays) and
  // `prompt_logprobs`.
  bool logprobs = false;
};

// What a generation produced, as the processor reports it. Called from the drains (never two
// at once, never on the engine thread unless the executor is inline), in order: on_text any
// number of times, then on_done or on_error once.
struct OutputEvents {
  std::function<void(const std::vector<TextDelta>& deltas)> on_text;  // one release
  std::function<void(const std::vector<generate::GeneratedSequence>& results)> on_done;
  std::function<void(engine::ErrorKind kind, const std::string& message)> on_error;
};

class OutputProcessor : public engine::JobSink, public std::enable_shared_from_this<OutputProcessor> {
 public:
  // `request`: its n and stop strings are used. The tokenizer must outlive the processor.
  OutputProcessor(std::shared_ptr<const text::BpeTokenizer> tokenizer, const generate::GenerationRequest& request,
                  OutputOptions options, Executor executor, OutputEvents events);
  ~OutputProcessor() override;

  // The job whose outputs this processor gets: a stop string found in sequence i calls
  // job->stop(i). Held weakly (the job holds the processor). Call before submitting the job.
  void bind(const std::weak_ptr<engine::Job>& job);

  // JobSink, on the engine's thread: queue, post one drain when none is pending, return.
  void on_outputs(std::span<const engine::TokenOutput> outputs) override;
  void on_error(engine::ErrorKind kind, const std::string& message) override;
  void on_prompt_logprobs(std::vector<engine::TokenOutput> prompt) override;

  // The log-probabilities of sequence `index`'s tokens (EOS excluded). Read them from on_done.
  const std::vector<generate::TokenLogprob>& logprobs(int index) const;

 private:
  struct Sequence;

  void drain();
  void process(const engine::TokenOutput& output);
  // Appends decoded text to `s`; true when a stop string now occurs (the text is cut before it).
  bool append(Sequence& s, const std::string& piece);
  void end(Sequence& s, const char* reason);
  std::size_t safe_size(const Sequence& s) const;  // of text that can be released
  void release();  // every sequence's safe text not yet released, as one on_text
  void finish();

  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  std::vector<std::string> stops_;
  OutputOptions options_;
  Executor executor_;
  OutputEvents events_;
  std::weak_ptr<engine::Job> job_;

  // Shared between the engine thread and the drains.
  std::mutex mutex_;
  std::vector<engine::TokenOutput> queued_;
  std::optional<std::pair<engine::ErrorKind, std::string>> error_;
  std::vector<generate::TokenLogprob> prompt_queued_;
  bool draining_ = false;  // a drain is posted or running

  // The drains' own state (one drain at a time).
  std::vector<Sequence> seqs_;
  std::vector<generate::TokenLogprob> prompt_logprobs_;
  bool over_ = false;  // done or error reported: nothing more is
};

}  // namespace writeup::service

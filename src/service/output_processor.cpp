#include "writeup/service/output_processor.hpp"

#include <algorithm>

#include "writeup/api/writeup_protocol.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::service {
namespace {

generate::TokenLogprob to_logprob(const engine::TokenOutput& o) {
  generate::TokenLogprob out{o.token, o.logprob, {}};
  for (int k = 0; k < std::min<int>(o.n_top, engine::kMaxTopLogprobs); ++k) {
    out.top.emplace_back(o.top[static_cast<std::size_t>(k)].token, o.top[static_cast<std::size_t>(k)].logprob);
  }
  return out;
}

}  // namespace

struct OutputProcessor::Sequence {
  explicit Sequence(const text::BpeTokenizer& tokenizer) : decoder(tokenizer) {}
  text::StreamDecoder decoder;
  std::string text;           // decoded so far, cut before a stop string
  std::vector<int> tokens;    // EOS excluded
  std::vector<generate::TokenLogprob> logprobs;  // one per token, kept for every token of the text
  // Per token: the size of `text` once its bytes were decoded (npos while they wait for the rest
  // of a character); tokens_pending: the first token still waiting.
  std::vector<std::size_t> ends;
  std::size_t tokens_pending = 0;
  std::size_t carried = 0;    // tokens whose logprobs went out in a delta
  bool prompt_sent = false;   // the prompt's logprobs went out (first delta)
  std::size_t released = 0;   // bytes of `text` the clients got
  int released_tokens = 0;    // token count in the last release
  int released_words = 0;     // words of the released text (every_words > 0)
  const char* finish = nullptr;  // set once the sequence ended
};

OutputProcessor::OutputProcessor(std::shared_ptr<const text::BpeTokenizer> tokenizer,
                                 const generate::GenerationRequest& request, OutputOptions options, Executor executor,
                                 OutputEvents events)
    : tokenizer_(std::move(tokenizer)),
      options_(options),
      executor_(std::move(executor)),
      events_(std::move(events)) {
  for (const auto& s : request.params.stop) {
    if (!s.empty()) stops_.push_back(s);
  }
  seqs_.reserve(static_cast<std::size_t>(std::max(0, request.n)));
  for (int i = 0; i < request.n; ++i) seqs_.emplace_back(*tokenizer_);
}

OutputProcessor::~OutputProcessor() = default;

void OutputProcessor::bind(const std::weak_ptr<engine::Job>& job) { job_ = job; }

void OutputProcessor::on_outputs(std::span<const engine::TokenOutput> outputs) {
  {
    std::lock_guard lock(mutex_);
    queued_.insert(queued_.end(), outputs.begin(), outputs.end());
    if (draining_) return;
    draining_ = true;
  }
  if (!executor_) return drain();
  executor_([self = shared_from_this()] { self->drain(); });
}

void OutputProcessor::on_error(engine::ErrorKind kind, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    if (!error_) error_.emplace(kind, message);
    if (draining_) return;
    draining_ = true;
  }
  if (!executor_) return drain();
  executor_([self = shared_from_this()] { self->drain(); });
}

void OutputProcessor::on_prompt_logprobs(std::vector<engine::TokenOutput> prompt) {
  std::lock_guard lock(mutex_);
  prompt_queued_.clear();
  for (const auto& o : prompt) prompt_queued_.push_back(to_logprob(o));
}

const std::vector<generate::TokenLogprob>& OutputProcessor::logprobs(int index) const {
  return seqs_.at(static_cast<std::size_t>(index)).logprobs;
}

// Outputs first, in the order the engine gave them; the error (nothing follows it) last.
void OutputProcessor::drain() {
  for (;;) {
    std::vector<engine::TokenOutput> batch;
    std::optional<std::pair<engine::ErrorKind, std::string>> error;
    {
      std::lock_guard lock(mutex_);
      if (!prompt_queued_.empty()) prompt_logprobs_ = std::move(prompt_queued_), prompt_queued_.clear();
      if (!queued_.empty()) {
        batch.swap(queued_);
      } else if (error_) {
        error = std::move(error_);
        error_.reset();
      } else {
        draining_ = false;
        return;
      }
    }
    if (over_) continue;  // done or failed: the rest is dropped
    try {
      if (error) {
        over_ = true;
        auto events = std::move(events_);
        events_ = {};
        if (events.on_error) events.on_error(error->first, error->second);
        continue;
      }
      for (const auto& o : batch) process(o);
      if (options_.every_words == 0) release();
      finish();
    } catch (const std::exception& e) {
      log::error(std::string("output processor: ") + e.what());
      if (auto job = job_.lock()) job->cancel();
      if (!over_) {
        over_ = true;
        auto events = std::move(events_);
        events_ = {};
        try {
          if (events.on_error) events.on_error(engine::ErrorKind::internal, "the output could not be processed");
        } catch (const std::exception& e2) {
          log::error(std::string("output processor: an error event threw: ") + e2.what());
        }
      }
    }
  }
}

void OutputProcessor::process(const engine::TokenOutput& o) {
  if (o.index < 0 || o.index >= static_cast<int>(seqs_.size())) return;
  auto& s = seqs_[static_cast<std::size_t>(o.index)];
  if (s.finish) return;  // ended here (a stop string) before the engine knew: later tokens are not part of it
  const bool eos = o.finish == engine::FinishReason::eos;
  if (o.token >= 0 && !eos) {
    s.tokens.push_back(o.token);
    s.logprobs.push_back(to_logprob(o));
    s.ends.push_back(std::string::npos);
    const bool stopped = append(s, s.decoder.push(o.token));
    if (stopped) {
      end(s, "stop");
      if (auto job = job_.lock()) job->stop(o.index);  // the engine ends it at its next step
      return;
    }
  }
  if (o.finish != engine::FinishReason::none) {
    const bool stopped = append(s, s.decoder.flush());
    switch (o.finish) {
      case engine::FinishReason::length: end(s, stopped ? "stop" : "length"); break;
      case engine::FinishReason::cancelled:
      case engine::FinishReason::error: end(s, "cancelled"); break;
      default: end(s, "stop"); break;  // eos, stop
    }
    return;
  }
  if (options_.every_words > 0) {
    const int words = api::count_words(std::string_view(s.text).substr(0, safe_size(s)));
    if (words - s.released_words >= options_.every_words) release();
  }
}

bool OutputProcessor::append(Sequence& s, const std::string& piece) {
  if (piece.empty()) return false;
  const std::size_t before = s.text.size();
  s.text += piece;
  // Every token waiting for the rest of a character ends here once none of its bytes wait.
  if (s.decoder.pending_bytes() == 0) {
    for (; s.tokens_pending < s.ends.size(); ++s.tokens_pending) s.ends[s.tokens_pending] = s.text.size();
  }
  // The text before `piece` held no stop string: one now ends inside `piece`.
  std::size_t cut = std::string::npos;
  for (const auto& stop : stops_) {
    const std::size_t from = before >= stop.size() - 1 ? before - (stop.size() - 1) : 0;
    cut = std::min(cut, s.text.find(stop, from));
  }
  if (cut == std::string::npos) return false;
  s.text.resize(cut);
  return true;
}

void OutputProcessor::end(Sequence& s, const char* reason) {
  s.finish = reason;
  // The tokens of the text: those that begin before its end (a stop string's cut drops the
  // tokens after it; one partly before it stays). Bytes never decoded end with the text.
  for (auto& e : s.ends) {
    if (e == std::string::npos) e = s.text.size();
  }
  // Tokens that ended together (a character split over them) begin where the group before ended.
  std::size_t keep = 0;
  for (std::size_t k = 0, start = 0; k < s.ends.size(); keep = ++k) {
    if (k > 0 && s.ends[k] != s.ends[k - 1]) start = s.ends[k - 1];
    if (start >= s.text.size()) break;
  }
  s.ends.resize(keep);
  s.logprobs.resize(keep);
  s.carried = std::min(s.carried, keep);
}

std::size_t OutputProcessor::safe_size(const Sequence& s) const {
  if (s.finish) return s.text.size();
  // Hold back the longest tail that begins a stop string.
  std::size_t held = 0;
  const std::string_view text(s.text);
  for (const auto& stop : stops_) {
    for (std::size_t k = std::min(stop.size() - 1, text.size()); k > held; --k) {
      if (text.substr(text.size() - k) == std::string_view(stop).substr(0, k)) {
        held = k;
        break;
      }
    }
  }
  return s.text.size() - held;
}

void OutputProcessor::release() {
  std::vector<TextDelta> deltas;
  for (std::size_t i = 0; i < seqs_.size(); ++i) {
    auto& s = seqs_[i];
    std::size_t safe = std::max(safe_size(s), s.released);
    if (options_.logprobs && !s.finish) {
      // Text goes out at token boundaries, with the tokens it completes: each delta's text is
      // its tokens' text (a character split over tokens goes out with its last token).
      std::size_t aligned = s.released;
      for (std::size_t k = s.carried; k < s.ends.size() && s.ends[k] != std::string::npos && s.ends[k] <= safe; ++k) {
        aligned = s.ends[k];
      }
      safe = aligned;
    }
    const int tokens = static_cast<int>(s.tokens.size());
    const bool more_logprobs = options_.logprobs && s.finish && s.carried < s.logprobs.size();
    if (safe == s.released && tokens == s.released_tokens && !more_logprobs) continue;
    deltas.push_back({static_cast<int>(i), s.text.substr(s.released, safe - s.released), tokens, {}, {}});
    if (options_.logprobs) {
      auto& d = deltas.back();
      for (; s.carried < s.logprobs.size(); ++s.carried) {
        if (!s.finish && (s.ends[s.carried] == std::string::npos || s.ends[s.carried] > safe)) break;
        d.logprobs.push_back(s.logprobs[s.carried]);
      }
      if (!s.prompt_sent) d.prompt_logprobs = prompt_logprobs_;
      s.prompt_sent = true;
    }
    s.released = safe;
    s.released_tokens = tokens;
    if (options_.every_words > 0) s.released_words = api::count_words(std::string_view(s.text).substr(0, safe));
  }
  if (!deltas.empty() && events_.on_text) events_.on_text(deltas);
}

void OutputProcessor::finish() {
  for (const auto& s : seqs_) {
    if (!s.finish) return;
  }
  // Per-token streaming releases what is left; under every_words the final texts carry it
  // (a last release would break the cadence: one update per N words).
  if (options_.every_words == 0) release();
  std::vector<generate::GeneratedSequence> results;
  results.reserve(seqs_.size());
  for (const auto& s : seqs_) {
    generate::GeneratedSequence r{s.tokens, s.text, s.finish, {}, {}};
    if (options_.logprobs) {
      r.logprobs = s.logprobs;
      r.prompt_logprobs = prompt_logprobs_;
    }
    results.push_back(std::move(r));
  }
  over_ = true;
  auto events = std::move(events_);
  events_ = {};
  if (events.on_done) events.on_done(results);
}

}  // namespace writeup::service

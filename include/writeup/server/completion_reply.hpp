#pragma once
// The answer of one POST /v1/completions request, made from the events of its generations (one
// per prompt). It decides when the answer may begin: a streaming answer's status line goes out
// only once every prompt was admitted (a worker's queue took it, it joined a running
// generation, or the cache answered it), so that a refusal is a real 429 with Retry-After;
// until then its chunks wait here. A failure of any prompt cancels the others and is the
// answer (or, once the stream began, its last event). Choices are indexed prompt_i * n + j.
//
// Its events run on several threads (one producer per prompt's flight); a mutex orders them,
// and every call to the sink (which only posts to the connection's strand) happens under it.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "writeup/api/openai_completions.hpp"
#include "writeup/server/reply_events.hpp"
#include "writeup/service/completion_service.hpp"

namespace writeup::server {

class CompletionReply : public std::enable_shared_from_this<CompletionReply> {
 public:
  // `prepared`: every prompt's, before they are handed to CompletionService::start.
  CompletionReply(api::CompletionRequest request, const std::vector<service::Prepared>& prepared, ReplySink sink);
  ~CompletionReply();

  // The events for prompt `prompt`'s generation.
  service::StreamEvents events(int prompt);
  // Every prompt's subscription (as one): cancelled when one prompt fails.
  void set_subscription(std::shared_ptr<service::Subscription> all);
  // Starting the request failed (one prompt refused): nothing more goes out from here.
  void abandon();

 private:
  struct Choice;
  struct Prompt;

  void admitted(int p);
  void text(int p, const std::vector<service::TextDelta>& deltas);
  void done(int p, const std::vector<generate::GeneratedSequence>& results);
  void failed(const service::ServiceError& error);
  // Streaming: chunks wait until every prompt was admitted, then go out in order.
  void emit(std::vector<std::string> chunks, bool last);
  bool all_admitted() const;
  void finish_plain();  // every prompt done, not streaming: the one JSON answer

  std::string chunk(nlohmann::json choice) const;
  std::string echo_chunk(int p, int j, const std::vector<generate::TokenLogprob>& prompt_logprobs);
  nlohmann::json prompt_logprobs(int p, const std::vector<generate::TokenLogprob>& scored, int& offset) const;
  nlohmann::json token_logprobs(const std::vector<generate::TokenLogprob>& tokens, int& offset) const;

  const api::CompletionRequest request_;
  const ReplySink sink_;
  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  std::string id_, model_;
  std::int64_t created_ = 0;

  mutable std::mutex mutex_;
  std::vector<Prompt> prompts_;
  std::vector<std::string> waiting_;  // chunks made before every prompt was admitted
  bool opened_ = false;               // the stream's status line was asked for
  bool over_ = false;                 // answered, failed or abandoned: nothing more goes out
  std::shared_ptr<service::Subscription> subscription_;
};

}  // namespace writeup::server

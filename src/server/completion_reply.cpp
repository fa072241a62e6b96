#include "writeup/server/completion_reply.hpp"

#include "writeup/api/openai_completions_logprobs.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::server {

struct CompletionReply::Choice {
  bool echoed = false;       // streaming: the echo chunk went out
  std::size_t streamed = 0;  // streaming: bytes of the text sent
  std::size_t carried = 0;   // streaming: tokens whose logprobs were sent
  int offset = 0;            // streaming: text_offset of the next token
};

struct CompletionReply::Prompt {
  std::string text;        // what echo returns
  std::vector<int> tokens;  // the prompt's ids
  int prompt_tokens = 0;
  bool admitted = false;
  bool done = false;
  std::vector<generate::GeneratedSequence> results;
  std::vector<Choice> choices;
};

CompletionReply::CompletionReply(api::CompletionRequest request, const std::vector<service::Prepared>& prepared,
                                 ReplySink sink)
    : request_(std::move(request)), sink_(std::move(sink)), id_(completion_id()), created_(unix_now()) {
  if (!prepared.empty()) {
    tokenizer_ = prepared.front().model->tokenizer;
    model_ = prepared.front().model->config.name;
  }
  for (const auto& p : prepared) {
    Prompt prompt;
    prompt.text = p.prompt_text;
    prompt.tokens = p.request.prompt;
    prompt.prompt_tokens = p.prompt_tokens;
    prompt.choices.resize(static_cast<std::size_t>(request_.candidates()));
    const int chars = api::count_chars(p.prompt_text);
    for (auto& c : prompt.choices) c.offset = request_.echo ? 0 : chars;
    prompts_.push_back(std::move(prompt));
  }
}

CompletionReply::~CompletionReply() = default;

// The events hold the reply (the flights hold the events until they end); the reply holds its
// subscriptions' flights only weakly: no cycle.
service::StreamEvents CompletionReply::events(int p) {
  service::StreamEvents events;
  auto self = shared_from_this();
  events.on_admitted = [self, p] { self->admitted(p); };
  events.on_text = [self, p](const std::vector<service::TextDelta>& deltas) { self->text(p, deltas); };
  events.on_done = [self, p](const std::vector<generate::GeneratedSequence>& results) { self->done(p, results); };
  events.on_error = [self](const service::ServiceError& e) { self->failed(e); };
  return events;
}

void CompletionReply::set_subscription(std::shared_ptr<service::Subscription> all) {
  std::unique_lock lock(mutex_);
  subscription_ = std::move(all);
  if (!over_ || !subscription_) return;
  auto cancel = subscription_;  // a prompt failed before every one was started
  lock.unlock();
  cancel->cancel();
}

void CompletionReply::abandon() {
  std::lock_guard lock(mutex_);
  over_ = true;
}

bool CompletionReply::all_admitted() const {
  for (const auto& p : prompts_) {
    if (!p.admitted) return false;
  }
  return true;
}

void CompletionReply::emit(std::vector<std::string> chunks, bool last) {
  if (!all_admitted()) {
    for (auto& c : chunks) waiting_.push_back(std::move(c));
    return;
  }
  if (!waiting_.empty()) {
    for (auto& c : chunks) waiting_.push_back(std::move(c));
    chunks = std::move(waiting_);
    waiting_.clear();
  }
  opened_ = true;
  if (chunks.empty() && !last) return sink_.open();
  sink_.events(std::move(chunks), last);
  if (last) over_ = true;
}

void CompletionReply::admitted(int p) {
  std::lock_guard lock(mutex_);
  if (over_ || prompts_[static_cast<std::size_t>(p)].admitted) return;
  prompts_[static_cast<std::size_t>(p)].admitted = true;
  if (request_.stream && all_admitted()) emit({}, false);
}

std::string CompletionReply::chunk(nlohmann::json choice) const {
  nlohmann::json choices = nlohmann::json::array();
  choices.push_back(std::move(choice));
  return api::wire_dump(api::make_completion_object(
      id_, created_, model_, std::move(choices),
      request_.include_usage ? nlohmann::json(nullptr) : nlohmann::json(nlohmann::json::value_t::discarded)));
}

nlohmann::json CompletionReply::token_logprobs(const std::vector<generate::TokenLogprob>& tokens, int& offset) const {
  std::vector<api::LogprobEntry> entries;
  for (const auto& t : tokens) {
    api::LogprobEntry e;
    const auto& bytes = tokenizer_->token_bytes(t.token);
    e.token = api::token_text(bytes);
    e.logprob = t.logprob;
    std::vector<std::pair<std::string, float>> top;
    for (const auto& [id, lp] : t.top) top.emplace_back(api::token_text(tokenizer_->token_bytes(id)), lp);
    e.top = std::move(top);
    e.text_offset = offset;
    offset += api::count_chars(bytes);
    entries.push_back(std::move(e));
  }
  return api::make_logprobs(entries);
}

// The prompt's tokens: the first has no logprob (nothing precedes it), token t > 0 has
// scored[t - 1] when the engine reported it (null otherwise).
nlohmann::json CompletionReply::prompt_logprobs(int p, const std::vector<generate::TokenLogprob>& scored,
                                                int& offset) const {
  std::vector<api::LogprobEntry> entries;
  const auto& ids = prompts_[static_cast<std::size_t>(p)].tokens;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    api::LogprobEntry e;
    const auto& bytes = tokenizer_->token_bytes(ids[t]);
    e.token = api::token_text(bytes);
    if (t > 0 && t - 1 < scored.size()) {
      e.logprob = scored[t - 1].logprob;
      std::vector<std::pair<std::string, float>> top;
      for (const auto& [id, lp] : scored[t - 1].top) top.emplace_back(api::token_text(tokenizer_->token_bytes(id)), lp);
      e.top = std::move(top);
    }
    e.text_offset = offset;
    offset += api::count_chars(bytes);
    entries.push_back(std::move(e));
  }
  return api::make_logprobs(entries);
}

std::string CompletionReply::echo_chunk(int p, int j, const std::vector<generate::TokenLogprob>& scored) {
  auto& prompt = prompts_[static_cast<std::size_t>(p)];
  auto& c = prompt.choices[static_cast<std::size_t>(j)];
  c.echoed = true;
  nlohmann::json logprobs = nullptr;
  if (request_.logprobs) logprobs = prompt_logprobs(p, scored, c.offset);
  return chunk(api::make_choice(prompt.text, p * request_.n + j, std::move(logprobs), std::nullopt));
}

void CompletionReply::text(int p, const std::vector<service::TextDelta>& deltas) {
  std::lock_guard lock(mutex_);
  if (over_ || !request_.stream) return;
  auto& prompt = prompts_[static_cast<std::size_t>(p)];
  prompt.admitted = true;
  std::vector<std::string> chunks;
  for (const auto& d : deltas) {
    if (d.index < 0 || d.index >= static_cast<int>(prompt.choices.size())) continue;
    auto& c = prompt.choices[static_cast<std::size_t>(d.index)];
    if (request_.echo && !c.echoed) chunks.push_back(echo_chunk(p, d.index, d.prompt_logprobs));
    const bool with_logprobs = request_.logprobs && !d.logprobs.empty();
    if (d.text.empty() && !with_logprobs) continue;
    c.streamed += d.text.size();
    nlohmann::json logprobs = nullptr;
    if (request_.logprobs) {
      logprobs = token_logprobs(d.logprobs, c.offset);
      c.carried += d.logprobs.size();
    }
    chunks.push_back(chunk(api::make_choice(d.text, p * request_.n + d.index, std::move(logprobs), std::nullopt)));
  }
  if (!chunks.empty() || all_admitted()) emit(std::move(chunks), false);
}

void CompletionReply::done(int p, const std::vector<generate::GeneratedSequence>& results) {
  std::lock_guard lock(mutex_);
  if (over_) return;
  auto& prompt = prompts_[static_cast<std::size_t>(p)];
  prompt.admitted = true;
  prompt.done = true;
  prompt.results = results;
  if (!request_.stream) {
    for (const auto& q : prompts_) {
      if (!q.done) return;
    }
    return finish_plain();
  }
  // What a stored response (or the end of the text) still owes each choice, then its finish.
  std::vector<std::string> chunks;
  for (std::size_t j = 0; j < results.size() && j < prompt.choices.size(); ++j) {
    auto& c = prompt.choices[j];
    const auto& r = results[j];
    const int index = p * request_.n + static_cast<int>(j);
    if (request_.echo && !c.echoed) chunks.push_back(echo_chunk(p, static_cast<int>(j), r.prompt_logprobs));
    const bool more_logprobs = request_.logprobs && c.carried < r.logprobs.size();
    if (c.streamed < r.text.size() || more_logprobs) {
      nlohmann::json logprobs = nullptr;
      if (request_.logprobs) {
        const auto from = static_cast<std::ptrdiff_t>(std::min(c.carried, r.logprobs.size()));
        const std::vector<generate::TokenLogprob> rest(r.logprobs.begin() + from, r.logprobs.end());
        logprobs = token_logprobs(rest, c.offset);
      }
      chunks.push_back(chunk(api::make_choice(r.text.substr(std::min(c.streamed, r.text.size())), index,
                                              std::move(logprobs), std::nullopt)));
    }
  }
  for (std::size_t j = 0; j < results.size(); ++j) {
    chunks.push_back(chunk(api::make_choice("", p * request_.n + static_cast<int>(j), nullptr, results[j].finish_reason)));
  }
  bool last = true;
  for (const auto& q : prompts_) last = last && q.done;
  if (last && request_.include_usage) {
    int prompt_tokens = 0, completion_tokens = 0;
    for (const auto& q : prompts_) {
      prompt_tokens += q.prompt_tokens;
      for (const auto& r : q.results) completion_tokens += static_cast<int>(r.tokens.size());
    }
    chunks.push_back(api::wire_dump(api::make_completion_object(id_, created_, model_, nlohmann::json::array(),
                                                                api::make_usage(prompt_tokens, completion_tokens))));
  }
  emit(std::move(chunks), last);
}

void CompletionReply::finish_plain() {
  over_ = true;
  try {
    nlohmann::json choices = nlohmann::json::array();
    int prompt_tokens = 0, completion_tokens = 0;
    for (std::size_t p = 0; p < prompts_.size(); ++p) {
      const auto& prompt = prompts_[p];
      prompt_tokens += prompt.prompt_tokens;
      for (const auto& r : prompt.results) completion_tokens += static_cast<int>(r.tokens.size());
      std::vector<int> order;
      if (request_.ranks_best_of()) {
        order = api::best_of_order(prompt.results, request_.n);
      } else {
        for (int j = 0; j < static_cast<int>(prompt.results.size()); ++j) order.push_back(j);
      }
      for (std::size_t j = 0; j < order.size(); ++j) {
        const auto& r = prompt.results[static_cast<std::size_t>(order[j])];
        nlohmann::json logprobs = nullptr;
        if (request_.logprobs) {
          int offset = request_.echo ? 0 : api::count_chars(prompt.text);
          if (request_.echo) {
            logprobs = prompt_logprobs(static_cast<int>(p), r.prompt_logprobs, offset);
            const auto rest = token_logprobs(r.logprobs, offset);
            for (const auto* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
              for (const auto& v : rest[key]) logprobs[key].push_back(v);
            }
          } else {
            logprobs = token_logprobs(r.logprobs, offset);
          }
        }
        choices.push_back(api::make_choice((request_.echo ? prompt.text : "") + r.text,
                                           static_cast<int>(p) * request_.n + static_cast<int>(j), std::move(logprobs),
                                           r.finish_reason));
      }
    }
    sink_.reply(200, api::wire_dump(api::make_completion_object(id_, created_, model_, std::move(choices),
                                                                api::make_usage(prompt_tokens, completion_tokens))));
  } catch (const std::exception& e) {
    sink_.error(api::ApiError(500, "internal_error", e.what()));
  }
}

void CompletionReply::failed(const service::ServiceError& error) {
  std::shared_ptr<service::Subscription> cancel;
  {
    std::lock_guard lock(mutex_);
    if (over_) return;
    over_ = true;
    waiting_.clear();
    sink_.error(error.error);
    cancel = subscription_;
  }
  // Outside the lock: leaving a flight may take the service's flight table, whose holder may
  // be delivering to this reply.
  if (cancel) cancel->cancel();
}

}  // namespace writeup::server

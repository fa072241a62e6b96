#include "writeup/server/reply_events.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "writeup/api/wire_json.hpp"
#include "writeup/util/hash.hpp"

namespace writeup::server {
std::string completion_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return "cmpl-" + to_hex64(rng()) + to_hex64(rng()).substr(0, 8);
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

service::StreamEvents completion_events(const api::CompletionRequest& request, const service::Prepared& prepared,
                                        ReplySink sink) {
  const std::string id = completion_id(), model = prepared.model->config.name;
  const std::int64_t created = unix_now();
  const int prompt_tokens = prepared.prompt_tokens;
  service::StreamEvents events;
  if (request.stream) {
    // Bytes of each choice streamed so far: a response from the cache streams no deltas, so
    // its text goes out whole before the final chunks. The flight calls them one at a time,
    // in order.
    auto streamed = std::make_shared<std::vector<std::size_t>>(static_cast<std::size_t>(request.n), 0);
    events.on_text = [=](const std::vector<service::TextDelta>& deltas) {
      std::vector<std::string> chunks;
      for (const auto& d : deltas) {
        const auto i = static_cast<std::size_t>(d.index);
        if (d.text.empty() || i >= streamed->size()) continue;
        (*streamed)[i] += d.text.size();
        chunks.push_back(api::wire_dump(api::make_completion_chunk(id, created, model, d.index, d.text, std::nullopt)));
      }
      if (!chunks.empty()) sink.events(std::move(chunks), false);
    };
    events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
      std::vector<std::string> finals;
      for (std::size_t i = 0; i < results.size(); ++i) {
        const auto sent = std::min((*streamed)[i], results[i].text.size());
        if (sent < results[i].text.size()) {
          finals.push_back(api::wire_dump(api::make_completion_chunk(id, created, model, static_cast<int>(i),
                                                                     results[i].text.substr(sent), std::nullopt)));
        }
      }
      for (std::size_t i = 0; i < results.size(); ++i) {
        finals.push_back(api::wire_dump(
            api::make_completion_chunk(id, created, model, static_cast<int>(i), "", results[i].finish_reason)));
      }
      sink.events(std::move(finals), true);
    };
    events.on_error = [=](const service::ServiceError& e) { sink.events({e.error.to_wire()}, true); };
    return events;
  }
  events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
    try {
      sink.reply(200, api::wire_dump(api::make_completion(id, created, model, request, results, prompt_tokens)));
    } catch (const std::exception& e) {
      sink.error(api::ApiError(500, "internal_error", e.what()));
    }
  };
  events.on_error = [error = sink.error](const service::ServiceError& e) { error(e.error); };
  return events;
}

service::StreamEvents generate_events(const api::WriteupRequest& request, const service::Prepared& prepared,
                                      ReplySink sink) {
  const auto model = prepared.model->config.name;
  const auto seed = prepared.request.params.seed;
  const auto key = prepared.cache_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(prepared.cache_key);
  service::StreamEvents events;
  events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
    try {
      std::vector<std::string> texts;
      int completed = 0;
      for (const auto& r : results) {
        texts.push_back(api::clean_suggestion(r.text));
        completed += static_cast<int>(r.tokens.size());
      }
      sink.reply(200, api::wire_dump(api::make_frame("completed_response", request.prompt, texts,
                                                     {{"model_name", model}, {"cache_key", key}, {"length", request.length},
                                                      {"completed", completed}, {"seed", seed}})));
    } catch (const std::exception& e) {
      sink.error(api::ApiError(500, "internal_error", e.what()));
    }
  };
  events.on_error = [error = sink.error](const service::ServiceError& e) { error(e.error); };
  return events;
}

}  // namespace writeup::server

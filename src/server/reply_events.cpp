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

service::StreamEvents generate_events(const api::WriteupRequest& request, const service::Prepared& prepared,
                                      ReplySink sink) {
  const auto model = prepared.model->config.name;
  const auto seed = prepared.request.params.seed;
  const auto key = prepared.cache_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(prepared.cache_key);
  service::StreamEvents events;
  const auto trace = prepared.trace;
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
                                                      {"completed", completed}, {"seed", seed},
                                                      {"cache", service::to_string(trace->cache.load())},
                                                      {"request_id", api::request_id_json(request)}})));
    } catch (const std::exception& e) {
      sink.error(api::ApiError(500, "internal_error", e.what()));
    }
  };
  events.on_error = [error = sink.error](const service::ServiceError& e) { error(e.error); };
  return events;
}

}  // namespace writeup::server

#include "writeup/server/chat_reply.hpp"

#include <memory>
#include <mutex>

#include "writeup/api/openai_chat.hpp"
#include "writeup/api/wire_json.hpp"

namespace writeup::server {

ReplySink chat_reply_sink(ReplySink inner) {
  ReplySink sink;
  sink.error = inner.error;
  sink.open = inner.open;  // a stream starts once the request was admitted
  sink.reply = [reply = inner.reply, error = inner.error](int status, std::string body) {
    if (status != 200) return reply(status, std::move(body));
    const auto completion = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (!completion.is_object()) return error(api::ApiError(500, "internal_error", "completion answer is not JSON"));
    reply(200, api::wire_dump(api::chat_completion_from(completion)));
  };
  // Per choice: whether its first delta (with the role) went out. The events of one request
  // come one at a time; the mutex only makes that explicit.
  struct State {
    std::mutex mutex;
    std::vector<bool> role_sent;
  };
  sink.events = [events = inner.events, state = std::make_shared<State>()](std::vector<std::string> data, bool last) {
    std::lock_guard lock(state->mutex);
    for (auto& d : data) {
      const auto chunk = nlohmann::json::parse(d, nullptr, /*allow_exceptions=*/false);
      if (chunk.is_object()) d = api::wire_dump(api::chat_chunk_from(chunk, state->role_sent));
    }
    events(std::move(data), last);
  };
  return sink;
}

}  // namespace writeup::server

#include "writeup/server/request_log.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <set>

#include "writeup/server/cors.hpp"

#include "writeup/api/wire_json.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::server {
namespace {

double ms_between(RequestRecord::Clock::time_point a, RequestRecord::Clock::time_point b) {
  const double ms = std::chrono::duration<double, std::milli>(b - a).count();
  return static_cast<double>(static_cast<long long>(ms * 10 + 0.5)) / 10;  // 0.1 ms
}

std::string format_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", ms);
  return buf;
}

// `finish` with `results`' reasons added: each reason once, sorted.
std::string add_finish_reasons(const std::string& finish, const std::vector<generate::GeneratedSequence>& results) {
  std::set<std::string> reasons;
  for (std::size_t start = 0; start < finish.size();) {
    const auto comma = std::min(finish.find(',', start), finish.size());
    reasons.insert(finish.substr(start, comma - start));
    start = comma + 1;
  }
  for (const auto& r : results) reasons.insert(r.finish_reason);
  std::string out;
  for (const auto& r : reasons) out += (out.empty() ? "" : ",") + r;
  return out;
}

std::atomic<bool> g_json{false};

bool is_probe(const std::string& route) { return route == "/health" || route == "/ready" || route == "/metrics"; }

}  // namespace

service::StreamEvents RequestRecord::observe(service::StreamEvents events, std::shared_ptr<RequestRecord> record) {
  // The record is written here (on the output processor's thread) before the original event
  // posts the answer to the session's strand, where it is read.
  if (events.on_done) {
    events.on_done = [record, done = std::move(events.on_done)](const std::vector<generate::GeneratedSequence>& results) {
      {
        std::lock_guard lock(record->mutex);
        int tokens = std::max(record->generated_tokens, 0);
        for (const auto& r : results) tokens += static_cast<int>(r.tokens.size());
        record->generated_tokens = tokens;
        record->finish = add_finish_reasons(record->finish, results);
      }
      done(results);
    };
  }
  if (events.on_error) {
    events.on_error = [record, error = std::move(events.on_error)](const service::ServiceError& e) {
      {
        std::lock_guard lock(record->mutex);
        record->finish = e.error.code();
      }
      error(e);
    };
  }
  return events;
}

void note_prepared(RequestRecord& record, const service::Prepared& prepared) {
  if (prepared.model) record.model = prepared.model->config.name;
  record.prompt_tokens = std::max(record.prompt_tokens, 0) + prepared.prompt_tokens;
  record.traces.push_back(prepared.trace);
}

std::string format_request_line(const RequestRecord& r, bool json, RequestRecord::Clock::time_point now) {
  std::set<std::string> outcomes;  // each once: "miss", or "hit,miss" for a prompt array
  for (const auto& t : r.traces) outcomes.insert(service::to_string(t->cache.load()));
  std::string cache;
  for (const auto& o : outcomes) cache += (cache.empty() ? "" : ",") + o;
  const auto queue_ms = ms_between(r.arrived, r.first_output.value_or(now));
  const auto total_ms = ms_between(r.arrived, now);
  if (json) {
    nlohmann::json j = {{"event", "request"}, {"id", r.id}, {"route", r.route}, {"protocol", r.protocol}};
    j["model"] = r.model.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.model);
    j["prompt_tokens"] = r.prompt_tokens < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.prompt_tokens);
    j["generated_tokens"] = r.generated_tokens < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.generated_tokens);
    j["cache"] = cache.empty() ? nlohmann::json(nullptr) : nlohmann::json(cache);
    j["status"] = r.status ? nlohmann::json(r.status) : nlohmann::json(nullptr);
    j["finish"] = r.finish.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.finish);
    j["queue_ms"] = queue_ms;
    j["total_ms"] = total_ms;
    return api::wire_dump(j);
  }
  std::string line = "request id=" + r.id + " route=" + r.route + " protocol=" + r.protocol;
  if (!r.model.empty()) line += " model=" + r.model;
  if (r.prompt_tokens >= 0) line += " prompt_tokens=" + std::to_string(r.prompt_tokens);
  if (r.generated_tokens >= 0) line += " generated_tokens=" + std::to_string(r.generated_tokens);
  if (!cache.empty()) line += " cache=" + cache;
  if (r.status) line += " status=" + std::to_string(r.status);
  if (!r.finish.empty()) line += " finish=" + r.finish;
  line += " queue_ms=" + format_ms(queue_ms) + " total_ms=" + format_ms(total_ms);
  return line;
}

void set_request_log_json(bool json) noexcept { g_json = json; }

void log_request(RequestRecord& record) noexcept {
  try {
    if (record.logged) return;
    record.logged = true;
    const bool json = g_json;
    std::string line;
    {
      std::lock_guard lock(record.mutex);  // a generation still running may add to it
      line = format_request_line(record, json, RequestRecord::Clock::now());
    }
    log::request(is_probe(record.route) ? log::Level::debug : log::Level::info, line, json);
  } catch (...) {
  }
}

RequestLogLine::RequestLogLine(std::string route, std::string protocol) : record_(std::make_shared<RequestRecord>()) {
  record_->id = new_request_id();
  record_->route = std::move(route);
  record_->protocol = std::move(protocol);
}

RequestLogLine::~RequestLogLine() {
  if (!record_ || record_->logged) return;
  try {
    std::lock_guard lock(record_->mutex);
    if (record_->finish.empty()) record_->finish = "cancelled";
  } catch (...) {
  }
  log_request(*record_);
}

void RequestLogLine::fail(const std::string& code) {
  std::lock_guard lock(record_->mutex);
  if (record_->finish.empty()) record_->finish = code;
}

}  // namespace writeup::server

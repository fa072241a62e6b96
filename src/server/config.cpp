#include "writeup/server/config.hpp"

#include "writeup/api/openai_chat.hpp"
#include "writeup/server/static_files.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <set>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace writeup::server {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& key, const std::string& message) {
  throw std::invalid_argument(key + ": " + message);
}

// One JSON object of the config: rejects unknown keys up front, then reads typed values.
class Section {
 public:
  Section(const json& j, std::string path, std::initializer_list<const char*> keys)
      : j_(j), path_(std::move(path)) {
    if (!j.is_object()) fail(path_, "must be an object, got " + j.dump());
    const std::set<std::string> known(keys.begin(), keys.end());
    for (const auto& item : j.items()) {
      if (!known.count(item.key())) fail(key(item.key()), "unknown key");
    }
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  // Strings; `nullable` ones read JSON null as "".
  void str(const char* k, std::string& out, bool nullable = false) const {
    if (const json* v = find(k)) {
      if (nullable && v->is_null()) {
        out.clear();
      } else if (v->is_string()) {
        out = v->get<std::string>();
      } else {
        fail(key(k), std::string("must be a string") + (nullable ? " or null" : ""));
      }
    }
  }
  void strings(const char* k, std::vector<std::string>& out) const {
    if (const json* v = find(k)) {
      if (!v->is_array()) fail(key(k), "must be an array of strings");
      out.clear();
      for (std::size_t i = 0; i < v->size(); ++i) {
        const auto& s = (*v)[i];
        if (!s.is_string() || s.get<std::string>().empty()) {
          fail(key(k) + "[" + std::to_string(i) + "]", "must be a non-empty string");
        }
        out.push_back(s.get<std::string>());
      }
    }
  }
  template <typename Int>
  void integer(const char* k, Int& out) const {
    if (const json* v = find(k)) {
      if (!v->is_number_integer()) fail(key(k), "must be an integer, got " + v->dump());
      const bool negative = !v->is_number_unsigned() && v->get<std::int64_t>() < 0;
      if (negative && std::is_unsigned_v<Int>) fail(key(k), "must be a non-negative integer");
      if (negative ? !std::in_range<Int>(v->get<std::int64_t>())
                   : !std::in_range<Int>(v->get<std::uint64_t>())) {
        fail(key(k), "is out of range");
      }
      out = v->get<Int>();
    }
  }
  void number(const char* k, double& out) const {
    if (const json* v = find(k)) {
      if (!v->is_number()) fail(key(k), "must be a number, got " + v->dump());
      out = v->get<double>();
    }
  }

 private:
  const json* find(const char* k) const {
    auto it = j_.find(k);
    return it == j_.end() ? nullptr : &*it;
  }
  const json& j_;
  std::string path_;
};

void check_int(const std::string& key, long long v, long long lo, long long hi) {
  if (v >= lo && v <= hi) return;
  if (hi == INT_MAX || hi == LLONG_MAX) {
    fail(key, lo == 0 ? "must be a non-negative integer" : "must be a positive integer");
  }
  fail(key, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
}

void check_positive(const std::string& key, double v) {
  if (!(v > 0) || !std::isfinite(v)) fail(key, "must be a positive number");
}

bool valid_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 8) return false;
  return d.find_first_not_of("0123456789", 5) == std::string::npos;
}

bool valid_name(const std::string& name) {
  return !name.empty() && name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
                                                 "tuvwxyz0123456789._-") == std::string::npos;
}

void check_model(const ModelConfig& m, const std::string& at) {
  if (!valid_name(m.name)) fail(at + ".name", "must be a non-empty name of letters, digits, '.', '_' or '-'");
  for (std::size_t i = 0; i < m.aliases.size(); ++i) {
    if (!valid_name(m.aliases[i])) {
      fail(at + ".aliases[" + std::to_string(i) + "]", "must be a non-empty name of letters, digits, '.', '_' or '-'");
    }
  }
  if (m.path.empty()) fail(at + ".path", "must be a non-empty model directory");
  if (!valid_device(m.device)) fail(at + ".device", "must be cpu, cuda or cuda:N");
  if (m.dtype != "auto" && m.dtype != "float32" && m.dtype != "float16" &&
      m.dtype != "bfloat16") {
    fail(at + ".dtype", "must be auto, float32, float16 or bfloat16");
  }
  if (m.weights != "f32" && m.weights != "bf16" && m.weights != "int8") {
    fail(at + ".weights", "must be f32, bf16 or int8");
  }
  if (m.weights != "f32" && m.device != "cpu") fail(at + ".weights", "bf16 and int8 need device cpu");
  if (m.packed_cache.find('\0') != std::string::npos) fail(at + ".packed_cache", "must not contain NUL");
  std::error_code ec;
  if (m.packed_cache != "auto" && m.packed_cache != "off" && !m.packed_cache.empty() &&
      std::filesystem::exists(m.packed_cache, ec) && !std::filesystem::is_directory(m.packed_cache, ec)) {
    fail(at + ".packed_cache", "'" + m.packed_cache + "' is not a folder (expected auto, off, null or a folder)");
  }
  check_int(at + ".workers", m.workers, 1, 16);
  check_int(at + ".max_batch", m.max_batch, 1, 64);
  check_int(at + ".kv_cache_mb", m.kv_cache_mb, 0, 1 << 20);
  try {
    api::ChatTemplate check(m.chat_template);
  } catch (const std::invalid_argument& e) {
    fail(at + ".chat_template", e.what());
  }
}

// Ranges and formats of every field (everything but the cross-field checks of validate()).
void check_values(const ServerConfig& c) {
  if (c.server.host.empty()) fail("server.host", "must be a non-empty host name or address");
  check_int("server.port", c.server.port, 0, 65535);
  check_int("server.io_threads", c.server.io_threads, 1, 64);
  check_int("limits.max_body_bytes", static_cast<long long>(c.limits.max_body_bytes), 1,
            LLONG_MAX);
  check_int("limits.max_connections", c.limits.max_connections, 1, INT_MAX);
  check_int("limits.max_queue", c.limits.max_queue, 1, INT_MAX);
  check_positive("limits.request_timeout_s", c.limits.request_timeout_s);
  check_positive("limits.idle_timeout_s", c.limits.idle_timeout_s);
  check_positive("limits.header_timeout_s", c.limits.header_timeout_s);
  check_positive("limits.min_body_bytes_per_s", c.limits.min_body_bytes_per_s);
  check_int("limits.max_batch_size", c.limits.max_batch_size, 1, 64);
  check_int("limits.max_length", c.limits.max_length, 1, 4096);
  check_int("limits.max_ws_message_bytes", static_cast<long long>(c.limits.max_ws_message_bytes),
            1, LLONG_MAX);
  check_int("limits.max_ws_queued_bytes", static_cast<long long>(c.limits.max_ws_queued_bytes),
            1, LLONG_MAX);
  check_int("stream.every_words", c.stream.every_words, 1, 100);
  if (!c.cache.redis.empty() &&
      (c.cache.redis.rfind("redis://", 0) != 0 || c.cache.redis.size() == 8)) {
    fail("cache.redis", "must be null or a URL redis://host:port[/db], got '" + c.cache.redis +
                            "'");
  }
  check_int("cache.ttl_s", c.cache.ttl_s, 1, INT_MAX);
  check_int("cache.memory_entries", c.cache.memory_entries, 0, INT_MAX);
  for (std::size_t i = 0; i < c.models.size(); ++i) {
    check_model(c.models[i], "models[" + std::to_string(i) + "]");
  }
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!levels.count(c.log_level)) {
    fail("log_level", "must be one of trace, debug, info, warn, error, off");
  }
  if (c.log_format != "text" && c.log_format != "json") fail("log_format", "must be text or json");
}

// A static_dir that is missing (or a file) would leave the server without a root to contain
// requests in: fail the start instead.
void check_static_dir(const std::string& dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(dir, ec);
  if (!std::filesystem::exists(status)) fail("server.static_dir", "'" + dir + "' does not exist");
  if (!std::filesystem::is_directory(status)) fail("server.static_dir", "'" + dir + "' is not a directory");
}

}  // namespace

ServerConfig ServerConfig::from_json(const json& j) {
  ServerConfig c;
  const Section top(j, "", {"server", "limits", "stream", "cache", "defaults", "models",
                            "log_level", "log_format"});
  if (j.contains("server")) {
    const Section s(j["server"], "server", {"host", "port", "io_threads", "api_keys",
                                            "allowed_origins", "static_dir"});
    s.str("host", c.server.host);
    s.integer("port", c.server.port);
    s.integer("io_threads", c.server.io_threads);
    s.strings("api_keys", c.server.api_keys);
    s.strings("allowed_origins", c.server.allowed_origins);
    s.str("static_dir", c.server.static_dir, true);
  }
  if (j.contains("limits")) {
    const Section s(j["limits"], "limits",
                    {"max_body_bytes", "max_connections", "max_queue", "request_timeout_s",
                     "idle_timeout_s", "header_timeout_s", "min_body_bytes_per_s", "max_batch_size",
                     "max_length", "max_ws_message_bytes", "max_ws_queued_bytes"});
    s.integer("max_body_bytes", c.limits.max_body_bytes);
    s.integer("max_connections", c.limits.max_connections);
    s.integer("max_queue", c.limits.max_queue);
    s.number("request_timeout_s", c.limits.request_timeout_s);
    s.number("idle_timeout_s", c.limits.idle_timeout_s);
    s.number("header_timeout_s", c.limits.header_timeout_s);
    s.number("min_body_bytes_per_s", c.limits.min_body_bytes_per_s);
    s.integer("max_batch_size", c.limits.max_batch_size);
    s.integer("max_length", c.limits.max_length);
    s.integer("max_ws_message_bytes", c.limits.max_ws_message_bytes);
    s.integer("max_ws_queued_bytes", c.limits.max_ws_queued_bytes);
  }
  if (j.contains("stream")) {
    const Section s(j["stream"], "stream", {"every_words"});
    s.integer("every_words", c.stream.every_words);
  }
  if (j.contains("cache")) {
    const Section s(j["cache"], "cache", {"redis", "ttl_s", "memory_entries"});
    s.str("redis", c.cache.redis, true);
    s.integer("ttl_s", c.cache.ttl_s);
    s.integer("memory_entries", c.cache.memory_entries);
  }
  if (j.contains("defaults")) {
    const Section s(j["defaults"], "defaults", {"seed", "model"});
    s.integer("seed", c.defaults.seed);
    s.str("model", c.defaults.model, true);
  }
  if (j.contains("models")) {
    if (!j["models"].is_array()) fail("models", "must be an array of model objects");
    for (std::size_t i = 0; i < j["models"].size(); ++i) {
      const std::string at = "models[" + std::to_string(i) + "]";
      const Section s(j["models"][i], at,
                      {"name", "path", "device", "dtype", "weights", "packed_cache", "workers", "max_batch", "kv_cache_mb", "notice",
                       "aliases", "chat_template"});
      for (const char* required : {"name", "path"}) {
        if (!j["models"][i].contains(required)) fail(s.key(required), "is required");
      }
      ModelConfig m;
      s.str("name", m.name);
      s.str("path", m.path);
      s.str("device", m.device);
      s.str("dtype", m.dtype);
      s.str("weights", m.weights);
      s.str("packed_cache", m.packed_cache, true);
      s.integer("workers", m.workers);
      s.integer("max_batch", m.max_batch);
      s.integer("kv_cache_mb", m.kv_cache_mb);
      s.str("notice", m.notice, true);
      s.strings("aliases", m.aliases);
      s.str("chat_template", m.chat_template, true);
      c.models.push_back(std::move(m));
    }
  }
  top.str("log_level", c.log_level);
  top.str("log_format", c.log_format);
  check_values(c);
  return c;
}

ServerConfig ServerConfig::load(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::invalid_argument(file.string() + ": cannot open config file");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw std::invalid_argument(file.string() + ": not valid JSON: " + e.what());
  }
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(file.string() + ": " + e.what());
  }
}

void ServerConfig::validate() {
  check_values(*this);
  if (models.empty()) fail("models", "at least one model is required");
  std::set<std::string> names;  // every name and alias: one model each
  for (std::size_t i = 0; i < models.size(); ++i) {
    if (!names.insert(models[i].name).second) {
      fail("models[" + std::to_string(i) + "].name", "duplicate model name '" +
                                                         models[i].name + "'");
    }
  }
  for (std::size_t i = 0; i < models.size(); ++i) {
    for (std::size_t k = 0; k < models[i].aliases.size(); ++k) {
      if (!names.insert(models[i].aliases[k]).second) {
        fail("models[" + std::to_string(i) + "].aliases[" + std::to_string(k) + "]",
             "'" + models[i].aliases[k] + "' is already the name or an alias of a model");
      }
    }
  }
  if (server.static_dir == "auto") server.static_dir = default_web_dir();
  if (!server.static_dir.empty()) check_static_dir(server.static_dir);
  if (defaults.model.empty()) {
    defaults.model = models.front().name;
  } else if (!names.count(defaults.model)) {
    fail("defaults.model", "'" + defaults.model + "' is not one of the configured models");
  }
}

namespace {

int flag_int(const std::string& flag, const std::string& value) {
  int out = 0;
  const auto r = std::from_chars(value.data(), value.data() + value.size(), out);
  if (value.empty() || r.ec != std::errc() || r.ptr != value.data() + value.size()) {
    fail(flag, "expected an integer, got '" + value + "'");
  }
  return out;
}

// name=DIR[@device]
ModelConfig flag_model(const std::string& value) {
  ModelConfig m;
  const auto eq = value.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == value.size()) {
    fail("--model", "expected name=DIR[@device], got '" + value + "'");
  }
  m.name = value.substr(0, eq);
  m.path = value.substr(eq + 1);
  if (const auto at = m.path.rfind('@'); at != std::string::npos) {
    m.device = m.path.substr(at + 1);
    m.path.resize(at);
    if (!valid_device(m.device)) {
      fail("--model", "'" + m.device + "' is not a device (cpu, cuda or cuda:N)");
    }
  }
  return m;
}

}  // namespace

ServerConfig parse_command_line(int argc, char** argv, bool* help) {
  if (help) *help = false;
  // --flag value or --flag=value, in order.
  std::vector<std::pair<std::string, std::string>> flags;
  static const std::set<std::string> with_value = {
      "--config", "--host",       "--port",       "--model",  "--redis",
      "--log-level", "--io-threads", "--static-dir", "--api-key", "--packed-cache"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      if (help) *help = true;
      return ServerConfig{};
    }
    std::string value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
      has_value = true;
    }
    if (!with_value.count(arg)) throw std::invalid_argument("unknown argument '" + arg + "'");
    if (!has_value) {
      if (i + 1 >= argc) fail(arg, "missing value");
      value = argv[++i];
    }
    flags.emplace_back(arg, value);
  }

  ServerConfig c;
  std::string config_file;
  for (const auto& [flag, value] : flags) {
    if (flag != "--config") continue;
    if (!config_file.empty()) fail("--config", "given more than once");
    config_file = value;
  }
  if (!config_file.empty()) c = ServerConfig::load(config_file);

  std::vector<ModelConfig> models;
  std::vector<std::string> api_keys;
  std::optional<std::string> packed_cache;
  for (const auto& [flag, value] : flags) {
    if (flag == "--host") {
      c.server.host = value;
    } else if (flag == "--port") {
      c.server.port = flag_int(flag, value);
    } else if (flag == "--model") {
      models.push_back(flag_model(value));
    } else if (flag == "--redis") {
      c.cache.redis = value == "none" ? "" : value;
    } else if (flag == "--log-level") {
      c.log_level = value;
    } else if (flag == "--io-threads") {
      c.server.io_threads = flag_int(flag, value);
    } else if (flag == "--static-dir") {
      c.server.static_dir = value;
    } else if (flag == "--packed-cache") {
      packed_cache = value;
    } else if (flag == "--api-key") {
      if (value.empty()) fail(flag, "must not be empty");
      api_keys.push_back(value);
    }
  }
  if (!models.empty()) {
    c.models = std::move(models);
    // The file's default may name a model the flags replaced.
    const bool kept = std::any_of(c.models.begin(), c.models.end(),
                                  [&](const ModelConfig& m) { return m.name == c.defaults.model; });
    if (!kept) c.defaults.model.clear();
  }
  if (!api_keys.empty()) c.server.api_keys = std::move(api_keys);
  if (packed_cache) {
    for (auto& m : c.models) m.packed_cache = *packed_cache;
  }
  c.validate();
  return c;
}

std::string command_line_usage() {
  return "usage: writeup-server [--config FILE] [flags]\n"
         "  --config FILE          JSON configuration (see config/*.json); flags override it\n"
         "  --host HOST            listen address (default 127.0.0.1)\n"
         "  --port N               listen port, 0 = any free port (default 8080)\n"
         "  --model NAME=DIR[@DEV] serve the model in DIR on DEV (cpu, cuda, cuda:N);\n"
         "                         repeatable, replaces the file's models\n"
         "  --redis URL            redis://host:port[/db] response cache, or none\n"
         "  --log-level LEVEL      trace, debug, info, warn, error or off\n"
         "  --io-threads N         network threads (default 2)\n"
         "  --static-dir DIR       serve the files of DIR at / (default auto: the built editor page\n"
         "                         when there is one; \"\" for none)\n"
         "  --api-key KEY          require this bearer key; repeatable, replaces the file's keys\n"
         "  --packed-cache DIR     every model's packed-weights cache folder: auto, a folder, or off\n"
         "  --help                 show this help\n";
}

}  // namespace writeup::server

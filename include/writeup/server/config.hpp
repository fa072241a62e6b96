#pragma once
// Server configuration: config/*.json, overridden by command-line flags. Unknown keys and bad
// values fail at start with a message naming the key path.
#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace writeup::server {

// One served model; each worker loads its own copy of the weights.
struct ModelConfig {
  std::string name;            // model name clients use (e.g. "gpt2-medium"), [A-Za-z0-9._-]+
  std::string path;            // Hugging Face model directory
  std::string device = "cpu";  // cpu, cuda, cuda:N
  std::string dtype = "auto";  // auto, float32, float16, bfloat16
  std::string weights = "f32";  // how the CPU's packed kernels store the weights: f32; bf16 (half
                                // the bytes, rounded to bfloat16); int8 (a quarter: 8-bit weights
                                // with a float32 scale per 64 inputs per column). Computed in
                                // float32, batch-invariant either way; bf16/int8 need device cpu
  std::string packed_cache = "auto";  // where the packed layout (weights as the CPU kernels read
                                      // them) is cached between starts, mapped on the next one:
                                      // "auto" = .writeup-cache/ beside the model when writable,
                                      // else $XDG_CACHE_HOME/writeup or ~/.cache/writeup; a folder;
                                      // "off" or null = none (pack at every start)
  int workers = 1;             // engine workers (1..16)
  int max_batch = 8;           // sequences one worker runs at once (1..64)
  int kv_cache_mb = 0;         // KV-cache memory per worker in MiB; 0 = auto (a quarter of the
                               // available memory on CPU); caps the slots below max_batch
  std::string notice;          // shown in /v1/models and logged at start ("" = none), e.g.
                               // "random weights: output is random text"
  std::vector<std::string> aliases;  // other names clients may use for this model (same charset as
                                     // name; unique across every model's name and aliases), e.g.
                                     // the original editor's "gpt2-medium-hp"
  std::string chat_template;   // how /v1/chat/completions turns messages into a prompt ("" = the
                               // built-in default: "role: content" lines ending with "assistant:")
};

struct ServerConfig {
  // Listening socket, authentication and static files.
  struct Server {
    std::string host = "127.0.0.1";
    int port = 8080;                           // 0 = any free port
    int io_threads = 2;                        // 1..64
    std::vector<std::string> api_keys;         // empty = no auth
    std::vector<std::string> allowed_origins;  // empty = any Origin for WebSocket upgrades
    // Files served at / (the editor page): "auto" = the built editor bundle when there is one
    // (static_files.hpp's default_web_dir(), resolved by validate()); "" or null = none (the API
    // alone); else an existing directory.
    std::string static_dir = "auto";
  } server;
  // Per-request and per-connection limits.
  struct Limits {
    std::size_t max_body_bytes = 1 << 20;
    int max_connections = 1024;
    int max_queue = 64;  // waiting requests per worker
    double request_timeout_s = 120;
    double idle_timeout_s = 300;
    // Slow clients: the whole request head must arrive within header_timeout_s of its first
    // byte, and a body must keep up at least min_body_bytes_per_s (its deadline is
    // header_timeout_s + expected bytes / this rate).
    double header_timeout_s = 10;
    double min_body_bytes_per_s = 1024;
    int max_batch_size = 10;  // writeup batch_size / OpenAI n (1..64)
    int max_length = 256;     // new tokens per request (1..4096)
    std::size_t max_ws_message_bytes = 1 << 20;
    // Outbound WebSocket frames waiting for a slow reader, per connection (beyond: closed, 1008).
    std::size_t max_ws_queued_bytes = 4 << 20;
  } limits;
  // Streaming of partial results.
  struct Stream {
    int every_words = 5;  // words between progress messages (1..100)
  } stream;
  // Response cache.
  struct Cache {
    std::string redis;           // "" = none (JSON null), else redis://host:port[/db]
    int ttl_s = 259200;          // Redis entry lifetime (3 days)
    int memory_entries = 10000;  // in-memory LRU size (0 = off)
  } cache;
  // Request defaults.
  struct Defaults {
    std::uint64_t seed = 42;
    std::string model;  // "" = the first model
  } defaults;
  std::vector<ModelConfig> models;
  std::string log_level = "info";  // trace, debug, info, warn, error, off
  std::string log_format = "text";  // request log lines (at info): "text" or "json" (JSON lines)

  // Throws std::invalid_argument whose message names the key path (e.g. "limits.max_queue: must
  // be a positive integer", "server.prot: unknown key") — unknown keys and bad values both fail.
  static ServerConfig from_json(const nlohmann::json& j);
  // Reads and parses `file`; errors name the file.
  static ServerConfig load(const std::filesystem::path& file);
  // Final checks after flags: at least one model, unique names, defaults.model names a model
  // (when empty, set to the first model's name), port 0..65535, server.static_dir (when set)
  // is an existing directory, and the ranges from_json checks.
  void validate();
};

// Flags: --config FILE (loaded first), --host H, --port N, --model name=DIR[@device]
// (repeatable; when given, these replace the file's models), --redis URL, --log-level L,
// --io-threads N, --static-dir DIR, --api-key KEY (repeatable), --help. Values may also be
// given as --flag=value. Unknown flags and bad values throw std::invalid_argument naming them.
// Returns the validated config. `--help` sets *help = true and returns a default config
// without validating.
ServerConfig parse_command_line(int argc, char** argv, bool* help);
std::string command_line_usage();

}  // namespace writeup::server

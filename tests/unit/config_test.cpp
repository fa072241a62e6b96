#include "writeup/server/config.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <stdexcept>

#include "test_support.hpp"

using namespace writeup::server;
using nlohmann::json;
namespace t = writeup::test;

namespace {

std::filesystem::path config_dir() { return t::data_dir().parent_path().parent_path() / "config"; }

// The std::invalid_argument message of from_json(j), or "" when it parsed.
std::string from_json_error(const json& j) {
  try {
    ServerConfig::from_json(j);
    return "";
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

// Runs parse_command_line over `args` (argv[0] added).
ServerConfig parse(std::vector<std::string> args, bool* help = nullptr) {
  args.insert(args.begin(), "writeup-server");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  bool ignored = false;
  return parse_command_line(static_cast<int>(argv.size()), argv.data(), help ? help : &ignored);
}

std::string parse_error(std::vector<std::string> args) {
  try {
    parse(std::move(args));
    return "";
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
}

const json kModel = {{"name", "m"}, {"path", "dir"}};

ModelConfig model_config(std::string name, std::string path) {
  ModelConfig m;
  m.name = std::move(name);
  m.path = std::move(path);
  return m;
}

}  // namespace

TEST(ServerConfig, Defaults) {
  const ServerConfig c = ServerConfig::from_json(json::object());
  EXPECT_EQ(c.server.host, "127.0.0.1");
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_EQ(c.server.io_threads, 2);
  EXPECT_TRUE(c.server.api_keys.empty());
  EXPECT_EQ(c.limits.max_body_bytes, 1u << 20);
  EXPECT_EQ(c.limits.max_queue, 64);
  EXPECT_EQ(c.limits.max_length, 256);
  EXPECT_EQ(c.stream.every_words, 5);
  EXPECT_EQ(c.cache.redis, "");
  EXPECT_EQ(c.cache.ttl_s, 259200);
  EXPECT_EQ(c.defaults.seed, 42u);
  EXPECT_TRUE(c.models.empty());
  EXPECT_EQ(c.log_level, "info");
  const ModelConfig m;
  EXPECT_EQ(m.device, "cpu");
  EXPECT_EQ(m.dtype, "auto");
  EXPECT_EQ(m.weights, "f32");
  EXPECT_EQ(m.workers, 1);
  EXPECT_EQ(m.max_batch, 8);
}

TEST(ServerConfig, LocalExampleParses) {
  ServerConfig c = ServerConfig::load(config_dir() / "local.json");
  c.validate();
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].name, "tiny-gpt2");
  EXPECT_EQ(c.models[0].path, "tests/data/tiny-gpt2");
  EXPECT_EQ(c.models[0].device, "cpu");
  EXPECT_EQ(c.models[0].notice.rfind("random weights", 0), 0u);
  EXPECT_EQ(c.cache.redis, "");
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_EQ(c.defaults.model, "tiny-gpt2");
}

TEST(ServerConfig, ServerExampleParses) {
  ServerConfig c = ServerConfig::load(config_dir() / "server.json");
  c.validate();
  ASSERT_EQ(c.models.size(), 8u);
  EXPECT_EQ(c.defaults.model, "gpt2-medium");
  EXPECT_EQ(c.server.host, "0.0.0.0");
  EXPECT_EQ(c.cache.redis, "redis://127.0.0.1:6379/0");
  for (const auto& m : c.models) {
    EXPECT_EQ(m.path, "models/" + m.name);
    EXPECT_EQ(m.device, "cuda:0");
    EXPECT_EQ(m.dtype, "float16");
  }
  EXPECT_EQ(c.models[7].name, "gpt2-medium-research-abstracts");
}

// Every name the original writeup.ai editor sends (and has constants for) is a model's name or
// alias in the shipped config; gpt2-medium-companies (no published weights) is gpt2-medium's.
TEST(ServerConfig, ServerExampleAcceptsEveryEditorModelName) {
  ServerConfig c = ServerConfig::load(config_dir() / "server.json");
  c.validate();
  const auto owner = [&](const std::string& name) -> std::string {
    for (const auto& m : c.models) {
      if (m.name == name || std::find(m.aliases.begin(), m.aliases.end(), name) != m.aliases.end()) return m.name;
    }
    return "";
  };
  EXPECT_EQ(owner("gpt2"), "gpt2");
  EXPECT_EQ(owner("gpt2-medium"), "gpt2-medium");
  EXPECT_EQ(owner("gpt2-large"), "gpt2-large");
  EXPECT_EQ(owner("gpt2-medium-hp"), "gpt2-medium-harry-potter");
  EXPECT_EQ(owner("gpt2-medium-research"), "gpt2-medium-research-abstracts");
  EXPECT_EQ(owner("gpt2-medium-companies"), "gpt2-medium");
  EXPECT_EQ(owner("gpt2-medium-legal"), "gpt2-medium-legal");
  EXPECT_EQ(owner("gpt2-medium-got"), "gpt2-medium-game-of-thrones");
  EXPECT_EQ(owner("gpt2-medium-lyrics"), "gpt2-medium-lyrics");
  EXPECT_NE(c.models[1].notice.find("gpt2-medium-companies"), std::string::npos);  // said, not hidden
}

// docker compose's cpu profile: one small model on the CPU that answers every editor name.
TEST(ServerConfig, CpuExampleParsesAndAnswersEveryEditorModelName) {
  ServerConfig c = ServerConfig::load(config_dir() / "cpu.json");
  c.validate();
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].device, "cpu");
  EXPECT_EQ(c.models[0].aliases.size(), 8u);
  EXPECT_NE(c.models[0].notice.find("gpt2 (small) answers every model name"), std::string::npos);
}

TEST(ServerConfig, AliasesAreParsedAndUniqueAcrossNamesAndAliases) {
  json j = {{"models", json::array({{{"name", "a"}, {"path", "da"}, {"aliases", {"a1", "a2"}}},
                                    {{"name", "b"}, {"path", "db"}, {"aliases", json::array()}}})},
            {"defaults", {{"model", "a2"}}}};
  ServerConfig c = ServerConfig::from_json(j);
  c.validate();
  EXPECT_EQ(c.models[0].aliases, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_TRUE(c.models[1].aliases.empty());
  EXPECT_EQ(c.defaults.model, "a2");  // a default may be an alias

  const auto validate_error = [](ServerConfig config) -> std::string {
    try {
      config.validate();
      return "";
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
  };
  ServerConfig bad = c;
  bad.models[1].aliases = {"a"};  // another model's name
  EXPECT_EQ(validate_error(bad), "models[1].aliases[0]: 'a' is already the name or an alias of a model");
  bad.models[1].aliases = {"x", "a1"};  // another model's alias
  EXPECT_EQ(validate_error(bad), "models[1].aliases[1]: 'a1' is already the name or an alias of a model");
  bad.models[1].aliases = {"b"};  // its own name
  EXPECT_EQ(validate_error(bad), "models[1].aliases[0]: 'b' is already the name or an alias of a model");
  bad.models[1].aliases = {"y", "y"};  // twice
  EXPECT_EQ(validate_error(bad), "models[1].aliases[1]: 'y' is already the name or an alias of a model");
  bad.models[1].aliases = {};
  bad.models[1].name = "a1";  // a name that is another model's alias
  EXPECT_NE(validate_error(bad).find("'a1' is already the name or an alias of a model"), std::string::npos);

  j["models"][1]["aliases"] = {"bad name"};
  EXPECT_NE(from_json_error(j).find("models[1].aliases[0]"), std::string::npos);
  j["models"][1]["aliases"] = "b1";  // not a list
  EXPECT_NE(from_json_error(j).find("models[1].aliases"), std::string::npos);
}

TEST(ServerConfig, UnknownKeysNameTheirPath) {
  EXPECT_EQ(from_json_error({{"sever", json::object()}}), "sever: unknown key");
  EXPECT_EQ(from_json_error({{"server", {{"prot", 1}}}}), "server.prot: unknown key");
  EXPECT_EQ(from_json_error({{"limits", {{"max_queue", 2}, {"max_q", 1}}}}),
            "limits.max_q: unknown key");
  EXPECT_EQ(from_json_error({{"models", {kModel, {{"name", "x"}, {"path", "p"}, {"gpu", 0}}}}}),
            "models[1].gpu: unknown key");
}

TEST(ServerConfig, BadTypesAndRangesNameTheKey) {
  EXPECT_EQ(from_json_error({{"limits", {{"max_queue", 0}}}}),
            "limits.max_queue: must be a positive integer");
  EXPECT_EQ(from_json_error({{"server", {{"port", 70000}}}}),
            "server.port: must be an integer from 0 to 65535");
  EXPECT_EQ(from_json_error({{"server", {{"port", "80"}}}}),
            "server.port: must be an integer, got \"80\"");
  EXPECT_EQ(from_json_error({{"server", {{"port", 80.5}}}}),
            "server.port: must be an integer, got 80.5");
  EXPECT_EQ(from_json_error({{"server", {{"io_threads", 1e12}}}}).rfind("server.io_threads: ", 0),
            0u);
  EXPECT_EQ(from_json_error({{"server", {{"api_keys", "k"}}}}),
            "server.api_keys: must be an array of strings");
  EXPECT_EQ(from_json_error({{"server", {{"api_keys", {"a", 3}}}}}),
            "server.api_keys[1]: must be a non-empty string");
  EXPECT_EQ(from_json_error({{"server", 5}}), "server: must be an object, got 5");
  EXPECT_EQ(from_json_error({{"limits", {{"request_timeout_s", 0}}}}),
            "limits.request_timeout_s: must be a positive number");
  EXPECT_EQ(from_json_error({{"limits", {{"max_body_bytes", -1}}}}),
            "limits.max_body_bytes: must be a non-negative integer");
  EXPECT_EQ(from_json_error({{"limits", {{"max_length", 5000}}}}),
            "limits.max_length: must be an integer from 1 to 4096");
  EXPECT_EQ(from_json_error({{"stream", {{"every_words", 0}}}}),
            "stream.every_words: must be an integer from 1 to 100");
  EXPECT_EQ(from_json_error({{"cache", {{"redis", "http://x"}}}}).rfind("cache.redis: ", 0), 0u);
  EXPECT_EQ(from_json_error({{"cache", {{"memory_entries", -1}}}}),
            "cache.memory_entries: must be a non-negative integer");
  EXPECT_EQ(from_json_error({{"defaults", {{"seed", -1}}}}),
            "defaults.seed: must be a non-negative integer");
  EXPECT_EQ(from_json_error({{"log_level", "verbose"}}).rfind("log_level: ", 0), 0u);
  EXPECT_EQ(from_json_error({{"models", kModel}}), "models: must be an array of model objects");
  EXPECT_EQ(from_json_error({{"models", {{{"path", "p"}}}}}), "models[0].name: is required");
  json m = kModel;
  m["device"] = "gpu";
  EXPECT_EQ(from_json_error({{"models", {m}}}), "models[0].device: must be cpu, cuda or cuda:N");
  m = kModel;
  m["dtype"] = "int8";
  EXPECT_EQ(from_json_error({{"models", {m}}}).rfind("models[0].dtype: ", 0), 0u);
  m = kModel;
  m["weights"] = "q4_0";
  EXPECT_EQ(from_json_error({{"models", {m}}}), "models[0].weights: must be f32, bf16 or int8");
  m["weights"] = "int8";
  m["device"] = "cuda";
  EXPECT_EQ(from_json_error({{"models", {m}}}), "models[0].weights: bf16 and int8 need device cpu");
  m = kModel;
  m["workers"] = 17;
  EXPECT_EQ(from_json_error({{"models", {m}}}),
            "models[0].workers: must be an integer from 1 to 16");
  m = kModel;
  m["kv_cache_mb"] = -1;
  EXPECT_EQ(from_json_error({{"models", {m}}}),
            "models[0].kv_cache_mb: must be an integer from 0 to 1048576");
  m = kModel;
  m["notice"] = 3;
  EXPECT_EQ(from_json_error({{"models", {m}}}), "models[0].notice: must be a string or null");
  m = kModel;
  m["name"] = "has space";
  EXPECT_EQ(from_json_error({{"models", {m}}}).rfind("models[0].name: ", 0), 0u);
  // Values that are fine.
  EXPECT_EQ(from_json_error({{"cache", {{"redis", nullptr}}},
                             {"defaults", {{"seed", 18446744073709551615ull}}},
                             {"models", {{{"name", "a.b_c-1"}, {"path", "p"},
                                          {"device", "cuda:12"}, {"dtype", "bfloat16"}}}}}),
            "");
}

TEST(ServerConfig, LoadNamesTheFile) {
  t::TempDir dir;
  t::write_file(dir / "bad.json", R"({"server": {"prot": 1}})");
  try {
    ServerConfig::load(dir / "bad.json");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "bad.json").string() + ": server.prot: unknown key");
  }
  t::write_file(dir / "broken.json", "{");
  EXPECT_THROW(ServerConfig::load(dir / "broken.json"), std::invalid_argument);
  EXPECT_THROW(ServerConfig::load(dir / "missing.json"), std::invalid_argument);
}

TEST(ServerConfig, FlagsOverrideTheFile) {
  const auto file = (config_dir() / "server.json").string();
  const ServerConfig c = parse({"--port", "9001", "--config", file, "--host=127.0.0.2",
                                "--redis", "none", "--log-level", "debug", "--io-threads", "3",
                                "--static-dir", config_dir().string(), "--api-key", "k1", "--api-key=k2"});
  EXPECT_EQ(c.server.port, 9001);
  EXPECT_EQ(c.server.host, "127.0.0.2");
  EXPECT_EQ(c.cache.redis, "");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.server.io_threads, 3);
  EXPECT_EQ(c.server.static_dir, config_dir().string());
  EXPECT_EQ(c.server.api_keys, (std::vector<std::string>{"k1", "k2"}));
  EXPECT_EQ(c.models.size(), 8u);  // from the file
  EXPECT_EQ(c.defaults.model, "gpt2-medium");
  EXPECT_EQ(parse({"--config", file, "--redis", "redis://cache:6380"}).cache.redis,
            "redis://cache:6380");
}

TEST(ServerConfig, ModelFlagsReplaceTheFileModels) {
  const auto file = (config_dir() / "server.json").string();
  const ServerConfig c = parse({"--config", file, "--model", "small=/models/gpt2@cuda:1",
                                "--model", "tiny=tests/data/tiny-gpt2"});
  ASSERT_EQ(c.models.size(), 2u);
  EXPECT_EQ(c.models[0].name, "small");
  EXPECT_EQ(c.models[0].path, "/models/gpt2");
  EXPECT_EQ(c.models[0].device, "cuda:1");
  EXPECT_EQ(c.models[1].name, "tiny");
  EXPECT_EQ(c.models[1].path, "tests/data/tiny-gpt2");
  EXPECT_EQ(c.models[1].device, "cpu");
  EXPECT_EQ(c.defaults.model, "small");  // the file's gpt2-medium is gone
  EXPECT_EQ(parse({"--model", "a=dir"}).defaults.model, "a");
  EXPECT_EQ(parse_error({"--model", "a=dir@gpu"}).rfind("--model: ", 0), 0u);
  EXPECT_EQ(parse_error({"--model", "nodir"}).rfind("--model: ", 0), 0u);
  EXPECT_EQ(parse_error({"--model", "a=d", "--model", "a=e"}).rfind("models[1].name: ", 0), 0u);
}

TEST(ServerConfig, BadFlagsThrowNamingThem) {
  EXPECT_EQ(parse_error({"--model", "a=d", "--prot", "1"}), "unknown argument '--prot'");
  EXPECT_EQ(parse_error({"--model", "a=d", "extra"}), "unknown argument 'extra'");
  EXPECT_EQ(parse_error({"--model", "a=d", "--port"}), "--port: missing value");
  EXPECT_EQ(parse_error({"--model", "a=d", "--port", "80x"}),
            "--port: expected an integer, got '80x'");
  EXPECT_EQ(parse_error({"--model", "a=d", "--port", "-1"}),
            "server.port: must be an integer from 0 to 65535");
  EXPECT_EQ(parse_error({"--model", "a=d", "--log-level", "loud"}).rfind("log_level: ", 0), 0u);
  EXPECT_EQ(parse_error({}), "models: at least one model is required");
}

TEST(ServerConfig, HelpReturnsDefaultsWithoutValidating) {
  bool help = false;
  const ServerConfig c = parse({"--port", "1", "--help"}, &help);
  EXPECT_TRUE(help);
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_TRUE(c.models.empty());
  EXPECT_NE(command_line_usage().find("--model"), std::string::npos);
}

TEST(ServerConfig, ValidateChecksModelsAndDefault) {
  ServerConfig c;
  EXPECT_THROW(c.validate(), std::invalid_argument);  // no models
  c.models = {model_config("a", "da"), model_config("b", "db")};
  c.validate();
  EXPECT_EQ(c.defaults.model, "a");
  c.defaults.model = "zzz";
  try {
    c.validate();
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()),
              "defaults.model: 'zzz' is not one of the configured models");
  }
  c.defaults.model = "b";
  c.models.push_back(model_config("a", "other"));
  try {
    c.validate();
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "models[2].name: duplicate model name 'a'");
  }
  c.models.pop_back();
  c.server.port = 65536;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.server.port = 0;
  c.validate();
}

TEST(ServerConfig, SlowClientLimits) {
  const ServerConfig d = ServerConfig::from_json(json::object());
  EXPECT_EQ(d.limits.header_timeout_s, 10);
  EXPECT_EQ(d.limits.min_body_bytes_per_s, 1024);
  const ServerConfig c =
      ServerConfig::from_json({{"limits", {{"header_timeout_s", 2.5}, {"min_body_bytes_per_s", 100}}}});
  EXPECT_EQ(c.limits.header_timeout_s, 2.5);
  EXPECT_EQ(c.limits.min_body_bytes_per_s, 100);
  EXPECT_EQ(from_json_error({{"limits", {{"header_timeout_s", 0}}}}), "limits.header_timeout_s: must be a positive number");
  EXPECT_EQ(from_json_error({{"limits", {{"min_body_bytes_per_s", -1}}}}),
            "limits.min_body_bytes_per_s: must be a positive number");
  EXPECT_EQ(from_json_error({{"limits", {{"header_timeout_s", "10"}}}}).rfind("limits.header_timeout_s: must be a number", 0), 0u);
}

TEST(ServerConfig, StaticDirMustBeAnExistingDirectory) {
  // A missing static_dir used to start the server with no containment root at all.
  const auto missing = (std::filesystem::temp_directory_path() / "writeup-no-such-static-dir").string();
  const auto file = (config_dir() / "local.json").string();
  EXPECT_EQ(parse_error({"--model", "m=dir", "--static-dir", missing}),
            "server.static_dir: '" + missing + "' does not exist");
  EXPECT_EQ(parse_error({"--model", "m=dir", "--static-dir", file}), "server.static_dir: '" + file + "' is not a directory");
  ServerConfig c;
  c.models.push_back(model_config("m", "dir"));
  c.server.static_dir = missing;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.server.static_dir = config_dir().string();
  EXPECT_NO_THROW(c.validate());
  c.server.static_dir.clear();  // no static files
  EXPECT_NO_THROW(c.validate());
}

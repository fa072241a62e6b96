#include "writeup/model/gpt2_config.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

#include "writeup/model/errors.hpp"

namespace writeup::model {
namespace {

int positive_int(const nlohmann::json& j, const char* key, const std::string& file,
                 int fallback = -1) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback >= 0) return fallback;
    throw ModelError(file + ": missing required key '" + key + "'");
  }
  const auto& v = j[key];
  if (!v.is_number_integer() || v.get<long long>() <= 0 || v.get<long long>() > (1 << 30)) {
    throw ModelError(file + ": '" + key + "' must be a positive integer, got " + v.dump());
  }
  return v.get<int>();
}

}  // namespace

GPT2Config GPT2Config::from_file(const std::filesystem::path& config_json) {
  const std::string file = config_json.string();
  std::ifstream in(config_json);
  if (!in) throw ModelError(file + ": cannot open (is this a model directory?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ModelError(file + ": not a JSON object");
  if (j.contains("model_type") && j["model_type"] != "gpt2") {
    throw ModelError(file + ": model_type " + j["model_type"].dump() + " is not gpt2");
  }
  GPT2Config c;
  c.n_layer = positive_int(j, "n_layer", file);
  c.n_head = positive_int(j, "n_head", file);
  c.n_embd = positive_int(j, "n_embd", file);
  c.n_positions = positive_int(j, "n_positions", file, positive_int(j, "n_ctx", file, 1024));
  c.vocab_size = positive_int(j, "vocab_size", file);
  c.n_inner = positive_int(j, "n_inner", file, 0);
  c.eos_token_id = positive_int(j, "eos_token_id", file, 50256);
  if (j.contains("layer_norm_epsilon")) {
    if (!j["layer_norm_epsilon"].is_number() || j["layer_norm_epsilon"].get<double>() <= 0) {
      throw ModelError(file + ": 'layer_norm_epsilon' must be a positive number");
    }
    c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
  }
  if (j.contains("activation_function")) {
    const auto act = j["activation_function"];
    if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
      throw ModelError(file + ": activation_function " + act.dump() +
                       " is not supported (GPT-2 uses gelu_new)");
    }
    c.activation = act.get<std::string>();
  }
  if (j.value("scale_attn_weights", true) != true ||
      j.value("scale_attn_by_inverse_layer_idx", false) != false) {
    throw ModelError(file + ": only scale_attn_weights=true without layer-index scaling is "
                            "supported");
  }
  if (c.n_embd % c.n_head != 0) {
    throw ModelError(file + ": n_embd (" + std::to_string(c.n_embd) +
                     ") is not divisible by n_head (" + std::to_string(c.n_head) + ")");
  }
  return c;
}

std::string GPT2Config::to_json() const {
  nlohmann::json j = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"activation_function", activation},
      {"n_layer", n_layer},
      {"n_head", n_head},
      {"n_embd", n_embd},
      {"n_inner", n_inner > 0 ? nlohmann::json(n_inner) : nlohmann::json(nullptr)},
      {"n_positions", n_positions},
      {"n_ctx", n_positions},
      {"vocab_size", vocab_size},
      {"layer_norm_epsilon", layer_norm_epsilon},
      {"bos_token_id", eos_token_id},
      {"eos_token_id", eos_token_id},
      {"scale_attn_weights", true},
      {"tie_word_embeddings", true},
      {"use_cache", true},
  };
  return j.dump(2) + "\n";
}

}  // namespace writeup::model

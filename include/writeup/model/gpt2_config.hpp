#pragma once
#include <filesystem>
#include <string>

namespace writeup::model {

// The fields of a Hugging Face GPT-2 config.json that the forward pass uses.
struct GPT2Config {
  int n_layer = 12;                 // transformer blocks
  int n_head = 12;                  // attention heads per block
  int n_embd = 768;                 // model width C
  int n_inner = 0;                  // MLP width; 0 = 4 * n_embd (config's null)
  int n_positions = 1024;           // context length
  int vocab_size = 50257;           // rows of wte
  double layer_norm_epsilon = 1e-5; // LayerNorm epsilon
  std::string activation = "gelu_new";  // only the tanh GELU of GPT-2 is supported
  int eos_token_id = 50256;         // <|endoftext|>

  int head_dim() const { return n_embd / n_head; }
  int mlp_dim() const { return n_inner > 0 ? n_inner : 4 * n_embd; }

  // Parses and validates config.json; ModelError names the file and the key.
  static GPT2Config from_file(const std::filesystem::path& config_json);
  // Serialises back to a config.json that transformers can read.
  std::string to_json() const;
};

}  // namespace writeup::model

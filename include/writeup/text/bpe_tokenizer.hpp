#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "writeup/text/bpe_merges.hpp"

namespace writeup::text {

class Pretokenizer;

// GPT-2 byte-level BPE: PCRE2 pre-tokenizer, byte-to-unicode map, merges applied by rank.
// Thread-safe: encode/decode may be called from any thread.
class BpeTokenizer {
 public:
  static constexpr std::string_view kEndOfText = "<|endoftext|>";

  // vocab.json + merges.txt (the files of a GPT-2 model directory).
  static std::shared_ptr<BpeTokenizer> from_files(const std::filesystem::path& vocab_json,
                                                  const std::filesystem::path& merges_txt);
  // A Hugging Face tokenizer.json with a BPE model.
  static std::shared_ptr<BpeTokenizer> from_tokenizer_json(const std::filesystem::path& path);
  // vocab.json + merges.txt when present, else tokenizer.json; throws naming what is missing.
  static std::shared_ptr<BpeTokenizer> from_model_dir(const std::filesystem::path& dir);

  ~BpeTokenizer();

  // Token ids of UTF-8 `text`; "<|endoftext|>" becomes the EOS id. Throws
  // std::invalid_argument (with the byte offset) on invalid UTF-8.
  std::vector<int> encode(std::string_view text) const;
  // Text of `ids`; byte sequences that are not UTF-8 become U+FFFD. Throws
  // std::out_of_range for an id outside the vocabulary.
  std::string decode(std::span<const int> ids) const;
  // Raw bytes of one token (may be part of a UTF-8 character).
  const std::string& token_bytes(int id) const;

  int vocab_size() const { return static_cast<int>(id_to_bytes_.size()); }
  int eos_id() const { return eos_id_; }
  // The merge table and the token of each byte (for tests and tools).
  const BpeMerges& merges() const { return merges_; }
  int byte_id(unsigned char byte) const { return byte_id_[byte]; }

  // The word cache holds the ids of short words (the ones that repeat); it is emptied when it
  // reaches `entries` words or `bytes` bytes (keys, ids and a per-entry overhead). Longer words
  // are merged every time: caching them would only hold memory. Set the limits before the
  // tokenizer is shared between threads.
  struct CacheLimits {
    std::size_t entries = 200000;
    std::size_t bytes = 32u << 20;
    std::size_t max_word_bytes = 256;
  };
  struct CacheStats {
    std::size_t entries = 0;
    std::size_t bytes = 0;
  };
  void set_cache_limits(const CacheLimits& limits);
  CacheStats cache_stats() const;

 private:
  BpeTokenizer(std::unordered_map<std::string, int> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges,
               const std::string& source);
  void encode_word(std::string_view word, std::vector<int>& out) const;
  std::vector<int> bpe(std::string_view word) const;

  std::unordered_map<std::string, int> vocab_;       // vocabulary string -> id
  std::vector<std::string> id_to_bytes_;             // id -> raw bytes
  std::array<int, 256> byte_id_{};                   // single-byte token ids
  BpeMerges merges_;
  int eos_id_ = -1;
  std::unique_ptr<Pretokenizer> pretokenizer_;

  // Word cache with lookups by string_view (no allocation on a hit).
  struct WordHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int>, WordHash, std::equal_to<>> cache_;
  mutable std::size_t cache_bytes_ = 0;
  CacheLimits cache_limits_;
};

}  // namespace writeup::text

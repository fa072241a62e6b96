#include "writeup/text/bpe_tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "writeup/text/byte_unicode.hpp"
#include "writeup/text/pretokenizer.hpp"
#include "writeup/text/utf8.hpp"

namespace writeup::text {
namespace {

// What one cached word costs besides its key and ids: node, bucket, string and vector headers.
constexpr std::size_t kCacheEntryOverhead = 96;

std::size_t cache_cost(std::string_view word, const std::vector<int>& ids) {
  return word.size() + ids.size() * sizeof(int) + kCacheEntryOverhead;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open tokenizer file " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json parse_json(const std::string& body, const std::filesystem::path& path) {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("tokenizer file " + path.string() + " is not valid JSON: " +
                             e.what());
  }
}

std::unordered_map<std::string, int> vocab_from_json(const nlohmann::json& j,
                                                     const std::filesystem::path& path) {
  if (!j.is_object()) throw std::runtime_error(path.string() + ": vocabulary is not an object");
  std::unordered_map<std::string, int> vocab;
  vocab.reserve(j.size());
  for (const auto& [key, value] : j.items()) {
    if (!value.is_number_integer() || value.get<long long>() < 0 ||
        value.get<long long>() > std::numeric_limits<int>::max()) {
      throw std::runtime_error(path.string() + ": vocabulary entry '" + key +
                               "' has no valid id");
    }
    vocab.emplace(key, value.get<int>());
  }
  return vocab;
}

}  // namespace

BpeTokenizer::BpeTokenizer(std::unordered_map<std::string, int> vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::string& source)
    : vocab_(std::move(vocab)), pretokenizer_(std::make_unique<Pretokenizer>()) {
  const auto& bu = ByteUnicode::instance();
  int max_id = -1;
  for (const auto& [tok, id] : vocab_) max_id = std::max(max_id, id);
  id_to_bytes_.assign(static_cast<std::size_t>(max_id + 1), std::string());
  std::vector<bool> seen(id_to_bytes_.size(), false);
  for (const auto& [tok, id] : vocab_) {
    if (seen[id]) throw std::runtime_error(source + ": id " + std::to_string(id) + " repeats");
    seen[id] = true;
    auto bytes = bu.decode(tok);
    // Added tokens such as <|endoftext|> are plain ASCII and decode like any other.
    id_to_bytes_[id] = bytes ? *bytes : tok;
  }
  for (std::size_t id = 0; id < seen.size(); ++id) {
    if (!seen[id]) throw std::runtime_error(source + ": id " + std::to_string(id) + " missing");
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(bu.encode(static_cast<unsigned char>(b)));
    if (it == vocab_.end()) {
      throw std::runtime_error(source + ": vocabulary lacks the token for byte " +
                               std::to_string(b));
    }
    byte_id_[b] = it->second;
  }
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end()) {
      throw std::runtime_error(source + ": merge " + std::to_string(rank + 1) + " '" + a + " " +
                               b + "' uses a token not in the vocabulary");
    }
    merges_.add(ia->second, ib->second, static_cast<int>(rank), im->second);
  }
  auto eos = vocab_.find(std::string(kEndOfText));
  eos_id_ = (eos != vocab_.end()) ? eos->second : -1;
}

BpeTokenizer::~BpeTokenizer() = default;

std::shared_ptr<BpeTokenizer> BpeTokenizer::from_files(const std::filesystem::path& vocab_json,
                                                       const std::filesystem::path& merges_txt) {
  auto vocab = vocab_from_json(parse_json(read_file(vocab_json), vocab_json), vocab_json);
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream in(read_file(merges_txt));
  std::string line;
  std::size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw std::runtime_error(merges_txt.string() + ":" + std::to_string(line_no) +
                               ": expected two tokens separated by one space");
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return std::shared_ptr<BpeTokenizer>(
      new BpeTokenizer(std::move(vocab), merges, vocab_json.parent_path().string()));
}

std::shared_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const std::filesystem::path& path) {
  const auto j = parse_json(read_file(path), path);
  const auto model = j.find("model");
  if (model == j.end() || !model->is_object() || model->value("type", "BPE") != "BPE" ||
      !model->contains("vocab") || !model->contains("merges")) {
    throw std::runtime_error(path.string() + ": expected a BPE \"model\" with vocab and merges");
  }
  auto vocab = vocab_from_json((*model)["vocab"], path);
  if (auto added = j.find("added_tokens"); added != j.end() && added->is_array()) {
    for (const auto& t : *added) {
      if (t.contains("content") && t.contains("id")) {
        vocab.emplace(t["content"].get<std::string>(), t["id"].get<int>());
      }
    }
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : (*model)["merges"]) {
    if (m.is_string()) {  // "a b"
      const auto s = m.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos) throw std::runtime_error(path.string() + ": bad merge " + s);
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {  // ["a", "b"] (tokenizers >= 0.20)
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      throw std::runtime_error(path.string() + ": bad merge entry " + m.dump());
    }
  }
  return std::shared_ptr<BpeTokenizer>(new BpeTokenizer(std::move(vocab), merges, path.string()));
}

std::shared_ptr<BpeTokenizer> BpeTokenizer::from_model_dir(const std::filesystem::path& dir) {
  const auto vocab = dir / "vocab.json", merges = dir / "merges.txt", tj = dir / "tokenizer.json";
  if (std::filesystem::exists(vocab) && std::filesystem::exists(merges)) {
    return from_files(vocab, merges);
  }
  if (std::filesystem::exists(tj)) return from_tokenizer_json(tj);
  throw std::runtime_error("model directory " + dir.string() +
                           " has no tokenizer: expected vocab.json and merges.txt, or "
                           "tokenizer.json");
}

std::vector<int> BpeTokenizer::encode(std::string_view text) const {
  require_utf8(text, "text to encode");
  std::vector<int> ids;
  std::vector<std::string_view> words;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto special = (eos_id_ >= 0) ? text.find(kEndOfText, pos) : std::string_view::npos;
    const auto end = (special == std::string_view::npos) ? text.size() : special;
    words.clear();
    pretokenizer_->split(text.substr(pos, end - pos), words);
    for (auto w : words) encode_word(w, ids);
    if (special == std::string_view::npos) break;
    ids.push_back(eos_id_);
    pos = special + kEndOfText.size();
  }
  return ids;
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int>& out) const {
  const bool cacheable = word.size() <= cache_limits_.max_word_bytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  auto ids = bpe(word);
  out.insert(out.end(), ids.begin(), ids.end());
  if (!cacheable) return;
  const std::size_t cost = cache_cost(word, ids);
  std::lock_guard lock(cache_mutex_);
  if (cache_.size() + 1 > cache_limits_.entries || cache_bytes_ + cost > cache_limits_.bytes) {
    cache_.clear();
    cache_bytes_ = 0;
  }
  if (cost <= cache_limits_.bytes && cache_limits_.entries > 0 &&
      cache_.emplace(std::string(word), std::move(ids)).second) {
    cache_bytes_ += cost;
  }
}

void BpeTokenizer::set_cache_limits(const CacheLimits& limits) {
  std::lock_guard lock(cache_mutex_);
  cache_limits_ = limits;
  cache_.clear();
  cache_bytes_ = 0;
}

BpeTokenizer::CacheStats BpeTokenizer::cache_stats() const {
  std::lock_guard lock(cache_mutex_);
  return {cache_.size(), cache_bytes_};
}

std::vector<int> BpeTokenizer::bpe(std::string_view word) const {
  std::vector<int> parts;
  parts.reserve(word.size());
  for (unsigned char c : word) parts.push_back(byte_id_[c]);
  merges_.apply(parts);
  return parts;
}

const std::string& BpeTokenizer::token_bytes(int id) const {
  if (id < 0 || id >= vocab_size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                            std::to_string(vocab_size() - 1) + ")");
  }
  return id_to_bytes_[static_cast<std::size_t>(id)];
}

std::string BpeTokenizer::decode(std::span<const int> ids) const {
  std::string bytes;
  for (int id : ids) bytes += token_bytes(id);
  return sanitize_utf8(bytes);
}

}  // namespace writeup::text

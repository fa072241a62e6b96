#include "writeup/text/stream_decoder.hpp"

#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/utf8.hpp"

namespace writeup::text {

std::string StreamDecoder::push(int id) {
  pending_ += tokenizer_->token_bytes(id);
  const std::size_t n = complete_utf8_prefix(pending_);
  std::string out = sanitize_utf8(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace writeup::text

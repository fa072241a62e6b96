#pragma once
#include <string>

namespace writeup::text {

class BpeTokenizer;

// Turns a stream of token ids into text without ever emitting part of a UTF-8 character:
// the bytes of an incomplete character wait for the next token. Invalid sequences come out
// as U+FFFD. One decoder per sequence; not thread-safe.
class StreamDecoder {
 public:
  explicit StreamDecoder(const BpeTokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Appends token `id`; returns the text that became complete (possibly empty).
  std::string push(int id);
  // Ends the stream: returns the held-back bytes (an incomplete tail becomes U+FFFD).
  std::string flush();
  // Bytes currently held back.
  std::size_t pending_bytes() const { return pending_.size(); }

 private:
  const BpeTokenizer* tokenizer_;
  std::string pending_;
};

}  // namespace writeup::text

#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace writeup::service {

// One sequence's text as it streams: appends pieces and releases only the text that can no
// longer turn out to be part of a stop string (which the final text will not contain).
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stops = {}) : stops_(std::move(stops)) {}

  // Appends `piece`; returns the newly releasable text (may be empty).
  std::string append(std::string_view piece);
  // The sequence ended with `final_text` (cut at any stop string): returns what was not yet
  // released.
  std::string finish(const std::string& final_text);

  const std::string& text() const { return text_; }        // everything appended
  std::string released() const { return text_.substr(0, released_); }

 private:
  std::vector<std::string> stops_;
  std::string text_;
  std::size_t released_ = 0;
  bool stopped_ = false;
};

}  // namespace writeup::service

#include "writeup/service/text_stream.hpp"

#include <algorithm>

namespace writeup::service {

std::string TextStream::append(std::string_view piece) {
  if (stopped_) return {};
  text_ += piece;
  std::size_t safe = text_.size();
  for (const auto& stop : stops_) {
    const auto at = text_.find(stop, released_ >= stop.size() ? released_ - stop.size() + 1 : 0);
    if (at != std::string::npos) {
      safe = std::min(safe, at);
      stopped_ = true;
      continue;
    }
    // Hold back the longest tail that is the beginning of this stop string.
    for (std::size_t k = std::min(stop.size() - 1, text_.size()); k > 0; --k) {
      if (std::string_view(text_).substr(text_.size() - k) == std::string_view(stop).substr(0, k)) {
        safe = std::min(safe, text_.size() - k);
        break;
      }
    }
  }
  if (safe <= released_) return {};
  std::string out = text_.substr(released_, safe - released_);
  released_ = safe;
  return out;
}

std::string TextStream::finish(const std::string& final_text) {
  if (final_text.size() <= released_) return {};
  std::string out = final_text.substr(released_);
  released_ = final_text.size();
  return out;
}

}  // namespace writeup::service

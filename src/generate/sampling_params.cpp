#include "writeup/generate/sampling_params.hpp"

#include <cmath>
#include <stdexcept>

namespace writeup::generate {
namespace {

void require(bool ok, const char* field, const std::string& rule) {
  if (!ok) throw std::invalid_argument(std::string(field) + " " + rule);
}

}  // namespace

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0.0f && temperature <= 100.0f,
          "temperature", "must be between 0 and 100");
  require(top_k >= 0, "top_k", "must be 0 (off) or positive");
  require(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p",
          "must be in (0, 1]");
  require(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f, "repetition_penalty",
          "must be positive");
  require(std::isfinite(presence_penalty) && std::fabs(presence_penalty) <= 2.0f,
          "presence_penalty", "must be between -2 and 2");
  require(std::isfinite(frequency_penalty) && std::fabs(frequency_penalty) <= 2.0f,
          "frequency_penalty", "must be between -2 and 2");
  require(max_tokens >= 1, "max_tokens", "must be at least 1");
  for (const auto& s : stop) require(!s.empty(), "stop", "strings must not be empty");
  for (std::size_t i = 0; i < logit_bias.size(); ++i) {
    const auto& [token, bias] = logit_bias[i];
    require(token >= 0, "logit_bias", "token ids must not be negative");
    require(i == 0 || logit_bias[i - 1].first < token, "logit_bias", "token ids must be sorted and unique");
    require(std::isfinite(bias) && std::fabs(bias) <= 100.0f, "logit_bias", "values must be between -100 and 100");
  }
}

}  // namespace writeup::generate

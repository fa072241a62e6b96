#include "writeup/service/cached_response.hpp"

#include <nlohmann/json.hpp>

#include "writeup/cache/cache_key.hpp"

namespace writeup::service {

std::string response_cache_key(std::string_view space, const std::string& model, const std::string& fingerprint,
                               const std::string& prompt, const generate::GenerationRequest& request) {
  if (fingerprint.empty()) return {};
  const auto& p = request.params;
  // Floats become doubles of the float the sampler uses: equal inputs, equal keys.
  nlohmann::json canonical = {
      {"model", model},
      {"fingerprint", fingerprint},
      {"prompt", prompt},
      {"prompt_tokens", request.prompt.size()},
      {"n", request.n},
      {"max_tokens", p.max_tokens},
      {"temperature", static_cast<double>(p.temperature)},
      {"top_k", p.top_k},
      {"top_p", static_cast<double>(p.top_p)},
      {"repetition_penalty", static_cast<double>(p.repetition_penalty)},
      {"presence_penalty", static_cast<double>(p.presence_penalty)},
      {"frequency_penalty", static_cast<double>(p.frequency_penalty)},
      {"stop", p.stop},
      {"seed", p.seed},
  };
  if (!p.logit_bias.empty()) {  // added only when set: keys of requests without it are unchanged
    nlohmann::json bias = nlohmann::json::array();
    for (const auto& [id, b] : p.logit_bias) bias.push_back({id, static_cast<double>(b)});
    canonical["logit_bias"] = bias;
  }
  return cache::cache_key(space, canonical);
}

std::string encode_results(const std::vector<generate::GeneratedSequence>& results) {
  nlohmann::json seqs = nlohmann::json::array();
  for (const auto& r : results) {
    seqs.push_back({{"text", r.text}, {"tokens", r.tokens}, {"finish_reason", r.finish_reason}});
  }
  return nlohmann::json{{"writeup_response", 1}, {"sequences", seqs}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::vector<generate::GeneratedSequence>> decode_results(std::string_view value, int n) {
  const auto j = nlohmann::json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("writeup_response", 0) != 1) return std::nullopt;
  const auto seqs = j.find("sequences");
  if (seqs == j.end() || !seqs->is_array() || static_cast<int>(seqs->size()) != n) return std::nullopt;
  std::vector<generate::GeneratedSequence> out;
  try {
    for (const auto& s : *seqs) {
      generate::GeneratedSequence g;
      g.text = s.at("text").get<std::string>();
      g.tokens = s.at("tokens").get<std::vector<int>>();
      g.finish_reason = s.at("finish_reason").get<std::string>();
      out.push_back(std::move(g));
    }
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  if (!cacheable(out)) return std::nullopt;
  return out;
}

bool cacheable(const std::vector<generate::GeneratedSequence>& results) {
  for (const auto& r : results) {
    if (r.finish_reason != "stop" && r.finish_reason != "length") return false;
  }
  return !results.empty();
}

}  // namespace writeup::service

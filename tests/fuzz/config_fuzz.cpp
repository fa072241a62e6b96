// Fuzz target: the server configuration (ServerConfig::from_json over any parsed JSON, then
// validate()). Property: bad values and unknown keys are std::invalid_argument naming them;
// nothing else escapes.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/server/config.hpp"

using namespace writeup;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto json = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  try {
    auto config = server::ServerConfig::from_json(json);
    config.validate();
    nlohmann::json models = nlohmann::json::array();
    for (const auto& m : config.models) models.push_back({{"name", m.name}, {"path", m.path}, {"device", m.device}});
    (void)api::wire_dump({{"models", models}, {"redis", config.cache.redis}, {"static_dir", config.server.static_dir}});
  } catch (const std::invalid_argument& e) {
    (void)api::wire_dump({{"error", e.what()}});
  } catch (const std::exception& e) {
    fuzz::finding(std::string("ServerConfig threw a non-invalid_argument: ") + e.what());
  }
  return 0;
}

#include "writeup/service/model_registry.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"
#include "writeup/metrics/registry.hpp"

using writeup::server::ModelConfig;
using writeup::server::ServerConfig;
namespace t = writeup::test;

namespace {

ModelConfig tiny(std::string name, std::vector<std::string> aliases) {
  ModelConfig m;
  m.name = std::move(name);
  m.path = (t::data_dir() / "tiny-gpt2").string();
  m.packed_cache = "off";  // "auto" would write a .writeup-cache/ folder into tests/data
  m.aliases = std::move(aliases);
  return m;
}

}  // namespace

// The original editor sends "gpt2-medium-hp" for the model configured as
// "gpt2-medium-harry-potter": an alias finds the same entry as the name.
TEST(ModelRegistry, FindsAModelByItsNameOrAnyAlias) {
  ServerConfig c;
  c.models = {tiny("gpt2-medium", {"gpt2-medium-companies"}),
              tiny("gpt2-medium-harry-potter", {"gpt2-medium-hp", "hp"})};
  c.validate();
  writeup::metrics::Registry metrics;
  writeup::service::ModelRegistry registry(c, metrics);
  const auto* medium = registry.find("gpt2-medium");
  const auto* hp = registry.find("gpt2-medium-harry-potter");
  ASSERT_NE(medium, nullptr);
  ASSERT_NE(hp, nullptr);
  EXPECT_NE(medium, hp);
  EXPECT_EQ(registry.find("gpt2-medium-companies"), medium);
  EXPECT_EQ(registry.find("gpt2-medium-hp"), hp);
  EXPECT_EQ(registry.find("hp"), hp);
  EXPECT_EQ(registry.find("gpt2-medium-hp")->config.name, "gpt2-medium-harry-potter");  // canonical
  EXPECT_EQ(registry.find("gpt2-medium-h"), nullptr);   // no prefix matching
  EXPECT_EQ(registry.find("GPT2-MEDIUM-HP"), nullptr);  // names are case-sensitive
  EXPECT_EQ(registry.find(""), nullptr);
  registry.stop();
}

TEST(ModelRegistry, TheDefaultModelMayBeGivenByAnAlias) {
  ServerConfig c;
  c.models = {tiny("a", {}), tiny("gpt2-medium-harry-potter", {"gpt2-medium-hp"})};
  c.defaults.model = "gpt2-medium-hp";
  c.validate();
  writeup::metrics::Registry metrics;
  writeup::service::ModelRegistry registry(c, metrics);
  EXPECT_EQ(registry.default_model().config.name, "gpt2-medium-harry-potter");
  registry.stop();
}

// Runs the real command-line tools as a user would.
#include <gtest/gtest.h>

#include "test_support.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/service/local_generation.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace t = writeup::test;

namespace {
std::string generate_cmd(const std::string& args) {
  // no packed-weights cache: it would write a .writeup-cache/ folder into tests/data
  return std::string(WRITEUP_GENERATE_BIN) + " --packed-cache off " + args;
}
}  // namespace

TEST(Tools, GenerateGreedyMatchesTheGoldenContinuation) {
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  const auto& fox = cases[1];
  ASSERT_EQ(fox["name"], "fox");
  const auto model = t::model_dir("tiny-gpt2").string();
  auto r = t::run_command(generate_cmd("--model " + model + " --prompt '" + fox["text"].get<std::string>() +
                                       "' --max-tokens 24 --temperature 0 --ids"),
                          false);
  ASSERT_EQ(r.status, 0) << r.output;
  std::string want;
  for (const auto& id : fox["greedy_new_ids"]) want += (want.empty() ? "" : " ") + std::to_string(id.get<int>());
  EXPECT_EQ(r.output, want + "\n");
  r = t::run_command(generate_cmd("--model " + model + " --prompt '" + fox["text"].get<std::string>() +
                                  "' --max-tokens 24 --temperature 0"),
                     false);
  EXPECT_EQ(r.output, fox["greedy_new_text"].get<std::string>() + "\n");
}

// --weights picks the packed kernels' format: bf16 keeps the golden greedy ids (weight_formats_test),
// a bad value fails naming it.
TEST(Tools, GenerateTakesAWeightFormat) {
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  const auto& fox = cases[1];
  const auto model = t::model_dir("tiny-gpt2").string();
  const auto prompt = " --prompt '" + fox["text"].get<std::string>() + "' --max-tokens 24 --temperature 0 --ids";
  auto r = t::run_command(generate_cmd("--model " + model + prompt + " --weights bf16"), false);
  ASSERT_EQ(r.status, 0) << r.output;
  std::string want;
  for (const auto& id : fox["greedy_new_ids"]) want += (want.empty() ? "" : " ") + std::to_string(id.get<int>());
  EXPECT_EQ(r.output, want + "\n");
  r = t::run_command(generate_cmd("--model " + model + prompt + " --weights q4"), true);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("'q4'"), std::string::npos) << r.output;
}

TEST(Tools, GenerateSamplesSeveralSequencesReproducibly) {
  const auto args = "--model " + t::model_dir("tiny-gpt2").string() +
                    " --prompt 'Once upon a time' --n 3 --max-tokens 12 --top-k 40 --seed 5 --timing";
  const auto a = t::run_command(generate_cmd(args), false);
  const auto b = t::run_command(generate_cmd(args), false);
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_NE(a.output.find("=== 2 (length) ==="), std::string::npos) << a.output;
}

TEST(Tools, GenerateRejectsBadArgumentsWithAMessage) {
  const auto model = t::model_dir("tiny-gpt2").string();
  auto r = t::run_command(generate_cmd("--model " + model + " --prompt hi --bogus 1"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown option --bogus"), std::string::npos) << r.output;
  r = t::run_command(generate_cmd("--model " + model + " --prompt hi --max-tokens lots"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--max-tokens"), std::string::npos) << r.output;
  r = t::run_command(generate_cmd("--model /nonexistent --prompt hi"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/nonexistent"), std::string::npos) << r.output;
  r = t::run_command(generate_cmd("--model " + model + " --prompt hi --max-tokens 100"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("exceeds the model context"), std::string::npos) << r.output;
}

TEST(Tools, MakeModelWritesALoadableDirectory) {
  t::TempDir dir;
  for (const char* dtype : {"f32", "f16", "bf16"}) {
    const auto out = dir / (std::string("tiny-") + dtype);
    const auto r = t::run_command(std::string(WRITEUP_MAKE_MODEL_BIN) + " --shape tiny --dtype " + dtype +
                                  " --seed 3 --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.output;
    auto model = writeup::model::GPT2Model::load(out);
    EXPECT_EQ(model->config().n_embd, 64);
    EXPECT_EQ(model->config().n_layer, 2);
    EXPECT_EQ(model->config().n_positions, 128);
    writeup::service::LocalEngineOptions eo;
    eo.path = out.string();
    writeup::service::LocalEngine engine(eo);
    writeup::generate::GenerationRequest req;
    req.prompt = engine.tokenizer().encode("Random weights still generate");
    req.params.max_tokens = 8;
    const auto res = engine.run(req).sequences;
    ASSERT_EQ(res.size(), 1u);
    EXPECT_FALSE(res[0].tokens.empty() && res[0].finish_reason != "stop");
  }
  // The same seed writes the same weights; another seed different ones.
  const auto again = dir / "again", other = dir / "other";
  ASSERT_EQ(t::run_command(std::string(WRITEUP_MAKE_MODEL_BIN) + " --shape tiny --seed 3 --out " + again.string()).status, 0);
  ASSERT_EQ(t::run_command(std::string(WRITEUP_MAKE_MODEL_BIN) + " --shape tiny --seed 4 --out " + other.string()).status, 0);
  EXPECT_EQ(t::read_file(dir / "tiny-f32" / "model.safetensors"), t::read_file(again / "model.safetensors"));
  EXPECT_NE(t::read_file(again / "model.safetensors"), t::read_file(other / "model.safetensors"));
  const auto bad = t::run_command(std::string(WRITEUP_MAKE_MODEL_BIN) + " --shape huge --out " + (dir / "x").string());
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.output.find("--shape"), std::string::npos);
}

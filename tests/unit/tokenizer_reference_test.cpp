// Cross-checks the tokenizer against a second, independent reference: the npm package
// gpt-3-encoder (OpenAI's original encoder.py ported to JS), run by node on 10,000 random
// texts from a fixed seed.
#include <gtest/gtest.h>

#include <random>

#include "test_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/utf8.hpp"

namespace t = writeup::test;
using writeup::text::BpeTokenizer;

namespace {

// Characters where the two regex engines disagree, so random texts leave them out (the HF
// fixtures, which the unit test checks case by case, are the authority for them):
//  - U+FEFF (BOM) and U+180E: JavaScript's \s counts them as whitespace; PCRE2 (like Python's
//    `regex` and HF tokenizers) treats them as format characters (\p{Cf}).
//  - U+0085 (NEL): PCRE2's and Python's \s include it, JavaScript's does not.
//  - U+1C80..U+1C88 and other letters added after Unicode 14: the JS engine's and PCRE2's
//    Unicode tables may differ in version; the pools below use long-assigned characters only.
const char32_t kExcluded[] = {0xFEFF, 0x180E, 0x0085};

const std::vector<std::u32string> kPools = {
    U"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    U"0123456789",
    U".,;:!?-_()[]{}<>\"/\\|@#$%^&*+=~`",
    U"'",
    U" ",
    U"\t\n\r\u000B\u000C\u00A0\u2003\u3000\u2028",
    U"àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœŒ",
    U"абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГД",
    U"αβγδεζηθικλμνξοπρστυφχψωΩΣΔ",
    U"ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    U"אבגדהוזחטיכלמנסעפצקרשת",
    U"कखगघङचछजझञटठडढणतथदधनपफबभमयरलवशसह\u093E\u093F\u0940\u094D",
    U"กขฃคฅฆงจฉชซฌญฎฏฐ\u0E31\u0E34\u0E35",
    U"的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    U"あいうえおかきくけこアイウエオカキクケコ",
    U"가나다라마바사아자차카타파하한국어",
    U"\U0001F600\U0001F602\U0001F44D\U0001F3FD\U0001F469\u200D\U0001F467\u2764\uFE0F\U0001F680\U0001F30D",
    U"０１２３４５６７８９²³¼½ⅫⅣ١٢٣",
    U"\u0301\u0308\u200B\u00AD\u2019\u201C\u201D\u2014\u2026€£¥©®™°±×÷",
};

const char* const kWords[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", " the",
                              " and", "  ", "   ", "\n\n", "\r\n", " 123", "...", "--", "http://x.y/z?a=1"};

std::string random_text(std::mt19937& rng) {
  std::string out;
  const int pieces = std::uniform_int_distribution<int>(1, 24)(rng);
  for (int p = 0; p < pieces; ++p) {
    if (std::uniform_int_distribution<int>(0, 5)(rng) == 0) {
      out += kWords[std::uniform_int_distribution<std::size_t>(0, std::size(kWords) - 1)(rng)];
      continue;
    }
    const auto& pool = kPools[std::uniform_int_distribution<std::size_t>(0, kPools.size() - 1)(rng)];
    const int len = std::uniform_int_distribution<int>(1, 8)(rng);
    for (int i = 0; i < len; ++i) {
      writeup::text::append_utf8(out, pool[std::uniform_int_distribution<std::size_t>(0, pool.size() - 1)(rng)]);
    }
  }
  return out;
}

}  // namespace

TEST(TokenizerReference, MatchesOpenAIsJsEncoderOnRandomTexts) {
  const std::filesystem::path node_dir = WRITEUP_NODE_DIR;
  ASSERT_TRUE(std::filesystem::exists(node_dir / "node_modules/gpt-3-encoder/package.json"))
      << "run scripts/install-deps.sh (npm install in tests/node)";
  for (char32_t c : kExcluded) {
    for (const auto& pool : kPools) ASSERT_EQ(pool.find(c), std::u32string::npos);
  }
  std::mt19937 rng(20261126);
  nlohmann::json texts = nlohmann::json::array();
  for (int i = 0; i < 10000; ++i) texts.push_back(random_text(rng));
  t::TempDir dir;
  t::write_file(dir / "in.json", texts.dump());
  const auto r = t::run_command("cd '" + node_dir.string() + "' && node encode.js '" +
                                (dir / "in.json").string() + "' '" + (dir / "out.json").string() + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto expected = t::load_json(dir / "out.json");
  ASSERT_EQ(expected.size(), texts.size());
  auto tok = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  int mismatches = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto text = texts[i].get<std::string>();
    const auto want = expected[i].get<std::vector<int>>();
    if (tok->encode(text) != want) {
      if (++mismatches <= 5) ADD_FAILURE() << "ids differ for " << texts[i].dump();
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << texts.size() << " texts";
}

#include "writeup/model/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "test_support.hpp"
#include "writeup/model/errors.hpp"

using namespace writeup::model;
namespace t = writeup::test;

namespace {

std::string with_header(const std::string& header, std::size_t data_bytes) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + std::string(data_bytes, '\x01');
}

// Opens `bytes` as a safetensors file and returns the error message ("" when it opened).
std::string open_error(const t::TempDir& dir, const std::string& bytes) {
  t::write_file(dir / "bad.safetensors", bytes);
  try {
    SafetensorsFile::open(dir / "bad.safetensors");
    return "";
  } catch (const ModelError& e) {
    return e.what();
  }
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST(Safetensors, ReadsTheFixtureHeader) {
  auto f = SafetensorsFile::open(t::model_dir("tiny-gpt2") / "model.safetensors");
  EXPECT_EQ(f->tensors().size(), 2u * 12 + 4);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const auto* wte = f->find("transformer.wte.weight");
  ASSERT_NE(wte, nullptr);
  EXPECT_EQ(wte->dtype, DType::F32);
  EXPECT_EQ(wte->shape, (std::vector<std::int64_t>{50257, 16}));
  EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(Safetensors, SameWeightsInBothLayoutsHaveTheSameBytes) {
  auto a = SafetensorsFile::open(t::model_dir("tiny-gpt2") / "model.safetensors");
  auto b = SafetensorsFile::open(t::model_dir("tiny-gpt2-hub") / "model.safetensors");
  const auto* ta = a->find("transformer.h.1.mlp.c_fc.weight");
  const auto* tb = b->find("h.1.mlp.c_fc.weight");
  ASSERT_TRUE(ta && tb);
  ASSERT_EQ(ta->end - ta->begin, tb->end - tb->begin);
  EXPECT_EQ(std::memcmp(a->data(*ta), b->data(*tb), ta->end - ta->begin), 0);
}

TEST(Safetensors, RejectsTruncatedFiles) {
  t::TempDir dir;
  const auto good = t::read_file(t::model_dir("tiny-gpt2") / "model.safetensors");
  const auto err = open_error(dir, good.substr(0, good.size() / 2));
  EXPECT_TRUE(contains(err, "bad.safetensors")) << err;
  EXPECT_TRUE(contains(err, "run past the end")) << err;
  EXPECT_TRUE(contains(err, "tensor '")) << err;
  EXPECT_TRUE(contains(open_error(dir, good.substr(0, 5)), "too short"));
  EXPECT_TRUE(contains(open_error(dir, good.substr(0, 100)), "header length"));
}

TEST(Safetensors, RejectsGarbage) {
  t::TempDir dir;
  std::string garbage(4096, '\0');
  for (std::size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 7919 % 251);
  EXPECT_TRUE(contains(open_error(dir, garbage), "header length"));
  EXPECT_TRUE(contains(open_error(dir, with_header("{not json", 0)), "not valid JSON"));
  EXPECT_TRUE(contains(open_error(dir, with_header("[1,2]", 0)), "not a JSON object"));
}

TEST(Safetensors, RejectsLyingHeaders) {
  t::TempDir dir;
  auto err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 24));
  EXPECT_TRUE(contains(err, "tensor 'w'") && contains(err, "need 24 bytes")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16));
  EXPECT_TRUE(contains(err, "run past the end")) << err;
  err = open_error(dir, with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                    R"("b":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}})", 16));
  EXPECT_TRUE(contains(err, "overlaps")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8));
  EXPECT_TRUE(contains(err, "tensor 'w'") && contains(err, "unsupported dtype 'I64'")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4));
  EXPECT_TRUE(contains(err, "non-integer dimension")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4));
  EXPECT_TRUE(contains(err, "end before")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                                    R"("data_offsets":[0,4]}})", 4));
  EXPECT_TRUE(contains(err, "more than the file holds")) << err;
  err = open_error(dir, with_header(R"({"w":{"dtype":"F32","shape":[1]}})", 4));
  EXPECT_TRUE(contains(err, "data_offsets")) << err;
  err = open_error(dir, with_header(R"({"__metadata__":{"k":1}})", 0));
  EXPECT_TRUE(contains(err, "__metadata__")) << err;
}

TEST(Safetensors, MissingFileIsNamed) {
  try {
    SafetensorsFile::open("/nonexistent/model.safetensors");
    FAIL();
  } catch (const ModelError& e) {
    EXPECT_TRUE(contains(e.what(), "/nonexistent/model.safetensors"));
  }
}

TEST(Safetensors, WriterRoundTrips) {
  t::TempDir dir;
  const std::vector<TensorSpec> specs = {{"a", DType::F32, {2, 2}}, {"b", DType::BF16, {3}}};
  write_safetensors(dir / "x.safetensors", specs, {{"format", "pt"}}, [](std::size_t i) {
    return i == 0 ? std::string(16, 'a') : std::string(6, 'b');
  });
  auto f = SafetensorsFile::open(dir / "x.safetensors");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->find("b")->dtype, DType::BF16);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data(*f->find("b"))), 6), "bbbbbb");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f->data(*f->find("a"))) % 8, 0u);
  EXPECT_THROW(write_safetensors(dir / "y.safetensors", specs, {},
                                 [](std::size_t) { return std::string(3, 'x'); }),
               ModelError);
}

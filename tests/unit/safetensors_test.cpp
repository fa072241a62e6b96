#include "writeup/model/safetensors.hpp"

#include <gtest/gtest.h>

#include <algorithm>
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

namespace {

// A file of `n` F32 tensors of `elems` values each; value i of tensor k is k * 1e6 + i, except
// that the value at `change` (tensor, index) is replaced by another.
std::filesystem::path write_model(const t::TempDir& dir, const std::string& name, int n,
                                  std::int64_t elems, std::pair<int, std::int64_t> change = {-1, 0}) {
  std::vector<TensorSpec> specs;
  for (int k = 0; k < n; ++k) specs.push_back({"t" + std::to_string(k), DType::F32, {elems}});
  write_safetensors(dir / name, specs, {{"format", "pt"}}, [&](std::size_t k) {
    std::vector<float> v(static_cast<std::size_t>(elems));
    for (std::int64_t i = 0; i < elems; ++i) {
      v[static_cast<std::size_t>(i)] = static_cast<float>(k * 1000000 + static_cast<std::size_t>(i));
    }
    if (change.first == static_cast<int>(k)) {
      auto& x = v[static_cast<std::size_t>(change.second)];
      x = -x - 1.0f;  // always another value (adding a small one may round back)
    }
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  });
  return dir / name;
}

std::uint64_t digest(const std::filesystem::path& path) {
  return SafetensorsFile::open(path)->content_digest();
}

}  // namespace

TEST(Safetensors, DigestDependsOnTensorValuesNotJustTheHeader) {
  t::TempDir dir;
  // 12 tensors of 1 MiB: large enough to be sampled rather than hashed whole.
  const std::int64_t elems = 1 << 18;
  const auto a = write_model(dir, "a.safetensors", 12, elems);
  const auto a2 = write_model(dir, "a2.safetensors", 12, elems);
  EXPECT_EQ(digest(a), digest(a));
  EXPECT_EQ(digest(a), digest(a2));  // same bytes, another file
  EXPECT_EQ(SafetensorsFile::open(a)->header(), SafetensorsFile::open(a2)->header());
  // One value in the middle of a tensor, in a tensor at the start, middle and end of the file.
  for (const int k : {0, 5, 11}) {
    const auto b = write_model(dir, "b" + std::to_string(k) + ".safetensors", 12, elems,
                               {k, elems / 2});
    const auto fb = SafetensorsFile::open(b);
    EXPECT_EQ(fb->header(), SafetensorsFile::open(a)->header());
    EXPECT_EQ(fb->file_size(), SafetensorsFile::open(a)->file_size());
    EXPECT_NE(fb->content_digest(), digest(a)) << "tensor " << k;
  }
}

TEST(Safetensors, DigestHashesSmallFilesWhole) {
  t::TempDir dir;
  const auto a = write_model(dir, "a.safetensors", 3, 1000);
  const auto windows = SafetensorsFile::open(a)->digest_windows();
  ASSERT_EQ(windows.size(), 1u);
  EXPECT_EQ(windows[0].first, 0u);
  EXPECT_EQ(windows[0].second, 12000u);
  // Any value: the first, one near the end of a tensor, the last.
  for (const auto& [k, i] : std::vector<std::pair<int, std::int64_t>>{{0, 0}, {1, 997}, {2, 999}}) {
    const auto b = write_model(dir, "b.safetensors", 3, 1000, {k, i});
    EXPECT_NE(digest(b), digest(a)) << k << "," << i;
  }
}

TEST(Safetensors, DigestWindowsSpanTheWholeDataSection) {
  t::TempDir dir;
  const std::int64_t elems = 300000;  // 1.2 MB per tensor, 20 tensors
  const auto path = write_model(dir, "a.safetensors", 20, elems);
  const auto f = SafetensorsFile::open(path);
  const std::uint64_t data_bytes = 20ull * elems * 4;
  const auto windows = f->digest_windows();
  const std::uint64_t w = SafetensorsFile::kDigestWindowBytes;
  ASSERT_EQ(windows.size(), 2 + SafetensorsFile::kDigestSpacedWindows + 20);
  EXPECT_EQ(windows[0], std::make_pair(std::uint64_t{0}, w));
  EXPECT_EQ(windows[1], std::make_pair(data_bytes - w, data_bytes));
  // Evenly spaced: no gap between consecutive windows is larger than 1/63 of the data.
  std::uint64_t last_begin = 0;
  for (std::size_t i = 2; i < 2 + SafetensorsFile::kDigestSpacedWindows; ++i) {
    EXPECT_LE(windows[i].first - last_begin, data_bytes / 63 + 1);
    EXPECT_LE(windows[i].second, data_bytes);
    last_begin = windows[i].first;
  }
  EXPECT_EQ(last_begin, data_bytes - w);
  // One window in the middle of every tensor.
  for (const auto& ti : f->tensors()) {
    const auto mid = (ti.begin + ti.end) / 2;
    EXPECT_TRUE(std::any_of(windows.begin() + 2 + SafetensorsFile::kDigestSpacedWindows,
                            windows.end(),
                            [&](const auto& win) { return win.first <= mid && mid < win.second; }))
        << ti.name;
  }
  // Each window's bytes count: changing a value inside any spaced window changes the digest.
  const auto base = f->content_digest();
  for (const std::size_t i : {std::size_t{2}, std::size_t{20}, std::size_t{40}}) {
    const auto at = (windows[i].first + windows[i].second) / 2 / 4;  // a value inside it
    const auto b = write_model(dir, "b.safetensors", 20, elems,
                               {static_cast<int>(at / elems), static_cast<std::int64_t>(at % elems)});
    EXPECT_NE(digest(b), base) << "window " << i;
  }
}

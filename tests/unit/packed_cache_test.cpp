// The packed-weights cache file (model::PackedCache, GPT2Model::load's packed_cache): a cold load
// writes it, a warm load maps it and gives bitwise the logits of a fresh pack, for every format;
// a damaged, foreign or stale file is detected, ignored and rewritten; a folder that cannot be
// written and "off" leave no file. Every test works on a temporary copy of tests/data/tiny-gpt2.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>

#include <sys/stat.h>
#include <unistd.h>

#include "test_support.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/model/packed_cache.hpp"
#include "writeup/server/config.hpp"

using namespace writeup::model;
namespace fs = std::filesystem;
namespace t = writeup::test;

namespace {

// A copy of a fixture model in a temp dir (so nothing is written into the source tree).
struct ModelCopy {
  explicit ModelCopy(const std::string& name = "tiny-gpt2") {
    fs::copy(t::model_dir(name), dir(), fs::copy_options::recursive);
    fs::remove_all(cache_dir());  // a folder some other run left in the source, never ours to reuse
  }
  fs::path dir() const { return tmp / "model"; }
  fs::path cache_dir() const { return dir() / ".writeup-cache"; }
  t::TempDir tmp;
};

std::shared_ptr<GPT2Model> load(const fs::path& dir, const std::string& weights, const std::string& cache) {
  LoadOptions o;
  o.weights = weights;
  o.packed_cache = cache;
  auto model = GPT2Model::load(dir, o);
  PackedCache::finish_writes();  // a cold load writes the file on a thread of its own
  return model;
}

at::Tensor logits(const GPT2Model& m) {
  auto cache = m.make_cache(1);
  std::vector<SequenceChunk> chunks{{0, 0, {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}}};
  return m.forward(chunks, cache, /*all_logits=*/true);
}

// The one cache file in `dir` (fails the test when there is not exactly one).
fs::path only_file(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::is_directory(dir)) {
    for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  }
  EXPECT_EQ(files.size(), 1u) << dir;
  return files.empty() ? fs::path() : files.front();
}

std::uint64_t read_u64(const fs::path& file, std::uint64_t offset) {
  std::ifstream in(file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::uint64_t v = 0;
  in.read(reinterpret_cast<char*>(&v), sizeof v);
  return v;
}

void flip_byte(const fs::path& file, std::uint64_t offset) {
  std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x10));
}

constexpr std::uint64_t kVersionOffset = 8, kDataOffsetField = 40;  // FileHeader's layout

class PackedCacheFormats : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(PackedCacheFormats, ColdLoadWritesWarmLoadMapsWithBitwiseTheSameLogits) {
  const ModelCopy model;
  const auto fresh = load(model.dir(), GetParam(), "off");
  EXPECT_FALSE(fs::exists(model.cache_dir()));

  const auto cold = load(model.dir(), GetParam(), "auto");
  EXPECT_FALSE(cold->packed_from_cache());
  const auto file = only_file(model.cache_dir());
  EXPECT_NE(file.filename().string().find(std::string("-") + GetParam() + "-v"), std::string::npos) << file;

  const auto warm = load(model.dir(), GetParam(), "auto");
  ASSERT_TRUE(warm->packed_from_cache());
  EXPECT_EQ(warm->fingerprint(), fresh->fingerprint());
  EXPECT_EQ(warm->weight_format(), parse_weight_format(GetParam()));
  EXPECT_TRUE(at::equal(logits(*warm), logits(*fresh)));
  EXPECT_TRUE(at::equal(logits(*cold), logits(*fresh)));
  // every packed matrix is a view into the one mapping, at its entry's offset (no copy)
  const auto layers = warm->packed_layers();
  ASSERT_EQ(layers.size(), 4u * static_cast<std::size_t>(warm->config().n_layer) + 1);
  const std::uint64_t first_packed = read_u64(file, 256 + 16);
  const std::uint64_t last_bias = read_u64(file, 256 + 64 * (layers.size() - 1) + 48);
  EXPECT_EQ(static_cast<const char*>(layers.back()->bias().data_ptr()) -
                static_cast<const char*>(layers.front()->packed().data_ptr()),
            static_cast<std::ptrdiff_t>(last_bias - first_packed));
}

INSTANTIATE_TEST_SUITE_P(Formats, PackedCacheFormats, ::testing::Values("f32", "bf16", "int8"));

// Each damage is detected, the model repacks (right logits) and the file is rewritten.
TEST(PackedCache, DamagedForeignOrStaleFilesAreIgnoredAndRewritten) {
  const ModelCopy model;
  const auto fresh = logits(*load(model.dir(), "int8", "off"));
  load(model.dir(), "int8", "auto");
  const auto file = only_file(model.cache_dir());
  const auto size = fs::file_size(file);
  const auto data = read_u64(file, kDataOffsetField);
  const std::string good = t::read_file(file);
  struct Damage {
    const char* what;
    std::function<void()> apply;
  };
  const Damage damages[] = {
      {"a data byte", [&] { flip_byte(file, data + 100); }},
      {"the last byte", [&] { flip_byte(file, size - 1); }},
      {"an entry's offset", [&] { flip_byte(file, 256 + 16); }},
      {"truncated", [&] { fs::resize_file(file, size - 64); }},
      {"truncated to the header", [&] { fs::resize_file(file, 100); }},
      {"empty", [&] { fs::resize_file(file, 0); }},
      {"the magic", [&] { flip_byte(file, 0); }},
      {"the layout version", [&] { flip_byte(file, kVersionOffset); }},
      {"the fingerprint", [&] { flip_byte(file, 64); }},
  };
  for (const auto& d : damages) {
    SCOPED_TRACE(d.what);
    t::write_file(file, good);
    d.apply();
    const auto m = load(model.dir(), "int8", "auto");
    EXPECT_FALSE(m->packed_from_cache());
    EXPECT_TRUE(at::equal(logits(*m), fresh));
    EXPECT_EQ(t::read_file(file), good);  // rewritten
    EXPECT_TRUE(load(model.dir(), "int8", "auto")->packed_from_cache());
  }
}

// A write removes its own weights' and format's files of other layouts and the temporary files
// of writes whose process is gone (older than an hour); nothing else.
TEST(PackedCache, AWriteRemovesItsStaleLayoutsAndDeadWritesOnly) {
  const ModelCopy model;
  load(model.dir(), "f32", "auto");
  const auto file = only_file(model.cache_dir());
  const std::string name = file.filename().string();
  const auto v = name.find("-f32-v");
  ASSERT_NE(v, std::string::npos) << name;
  const std::string fingerprint = name.substr(0, v), prefix = name.substr(0, v + 6);
  const auto at = [&](const std::string& n) { return model.cache_dir() / n; };
  const auto aged = [&](const std::string& n) {
    t::write_file(at(n), "x");
    fs::last_write_time(at(n), fs::file_time_type::clock::now() - std::chrono::hours(2));
  };
  const std::string gone = ".tmp.2147480000.0";  // no such process (beyond pid_max)
  const auto version = [](std::uint32_t v) { return std::to_string(v); };  // other layouts than ours
  const std::string folder = prefix + version(PackedCache::kLayoutVersion + 101) + "-t16-g64.packed";
  const std::vector<std::string> removed = {prefix + version(PackedCache::kLayoutVersion - 1) + "-t16-g64.packed",
                                            prefix + version(PackedCache::kLayoutVersion + 100) + "-t32-g128.packed",
                                            name + gone};
  for (const auto& n : {removed[0], removed[1]}) t::write_file(at(n), "old");
  aged(name + gone);
  const std::vector<std::string> kept = {
      fingerprint + "-bf16-v1-t16-g64.packed",                         // another format
      "0123456789abcdef-f32-v1-t16-g64.packed",                       // another model
      name + ".tmp." + std::to_string(::getpid()) + ".9",             // a live process's write
      name + ".tmp.2147480001.0",                                     // gone, but under an hour old
      "notes.txt",
  };
  for (const auto& n : kept) n.find(".tmp.") != std::string::npos && n.find("2147480001") == std::string::npos
                                 ? aged(n)
                                 : t::write_file(at(n), "keep");
  fs::create_directory(at(folder));  // not a regular file
  fs::remove(file);
  const auto m = load(model.dir(), "f32", "auto");  // a cold load: writes, then cleans up
  EXPECT_FALSE(m->packed_from_cache());
  EXPECT_TRUE(fs::is_regular_file(file));
  for (const auto& n : removed) EXPECT_FALSE(fs::exists(at(n))) << n;
  for (const auto& n : kept) EXPECT_TRUE(fs::exists(at(n))) << n;
  EXPECT_TRUE(fs::is_directory(at(folder)));
  // A warm load writes nothing and so removes nothing.
  t::write_file(at(removed[0]), "old");
  EXPECT_TRUE(load(model.dir(), "f32", "auto")->packed_from_cache());
  EXPECT_TRUE(fs::exists(at(removed[0])));
}

// A file written for other weights, under the name these weights' key gives, is not trusted.
TEST(PackedCache, AnotherModelsFileIsNotTrusted) {
  const ModelCopy a, b;
  {  // b: other values in one tensor (the fingerprint digests this small file whole)
    const auto st = b.dir() / "model.safetensors";
    flip_byte(st, fs::file_size(st) - 3);
  }
  const auto fresh_b = logits(*load(b.dir(), "f32", "off"));
  load(a.dir(), "f32", "auto");
  load(b.dir(), "f32", "auto");
  const auto file_a = only_file(a.cache_dir()), file_b = only_file(b.cache_dir());
  ASSERT_NE(file_a.filename(), file_b.filename());
  fs::copy_file(file_a, file_b, fs::copy_options::overwrite_existing);
  const auto m = load(b.dir(), "f32", "auto");
  EXPECT_FALSE(m->packed_from_cache());
  EXPECT_TRUE(at::equal(logits(*m), fresh_b));
  // and a file of another format under this format's name
  load(a.dir(), "bf16", "auto");
  fs::path bf16_file;
  for (const auto& e : fs::directory_iterator(a.cache_dir())) {
    if (e.path().filename().string().find("-bf16-") != std::string::npos) bf16_file = e.path();
  }
  ASSERT_FALSE(bf16_file.empty());
  fs::copy_file(bf16_file, file_a, fs::copy_options::overwrite_existing);
  const auto f32 = load(a.dir(), "f32", "auto");
  EXPECT_FALSE(f32->packed_from_cache());
  EXPECT_TRUE(at::equal(logits(*f32), logits(*load(a.dir(), "f32", "off"))));
}

// Something else where the file goes (a folder; a FIFO must not block either) is not read.
TEST(PackedCache, SomethingElseAtTheFilesPathIsNotRead) {
  const ModelCopy model;
  const auto fresh = load(model.dir(), "f32", "off");
  const auto where = model.cache_dir() / PackedCache::file_name({fresh->fingerprint(), WeightFormat::f32, {}});
  fs::create_directories(where);
  auto m = load(model.dir(), "f32", "auto");
  EXPECT_FALSE(m->packed_from_cache());
  EXPECT_TRUE(at::equal(logits(*m), logits(*fresh)));
  fs::remove(where);
  ASSERT_EQ(::mkfifo(where.c_str(), 0644), 0);
  m = load(model.dir(), "f32", "auto");
  EXPECT_FALSE(m->packed_from_cache());
  EXPECT_TRUE(at::equal(logits(*m), logits(*fresh)));
}

TEST(PackedCache, AFolderThatCannotBeWrittenLoadsWithoutAFile) {
  const ModelCopy model;
  t::write_file(model.tmp / "a-file", "x");
  const auto under_a_file = model.tmp / "a-file" / "cache";  // not creatable, even by root
  const auto m = load(model.dir(), "bf16", under_a_file.string());
  EXPECT_FALSE(m->packed_from_cache());
  EXPECT_TRUE(at::equal(logits(*m), logits(*load(model.dir(), "bf16", "off"))));
  EXPECT_FALSE(fs::exists(model.cache_dir()));
  for (const auto& e : fs::directory_iterator(model.tmp.path())) {
    EXPECT_TRUE(e.path().filename() == "model" || e.path().filename() == "a-file") << e.path();
  }
}

TEST(PackedCache, OffAndTheLibraryDefaultWriteNothingAFolderIsUsedAsGiven) {
  const ModelCopy model;
  load(model.dir(), "f32", "off");
  load(model.dir(), "f32", "");
  GPT2Model::load(model.dir());  // LoadOptions' default: off
  PackedCache::finish_writes();
  EXPECT_FALSE(fs::exists(model.cache_dir()));
  const auto folder = model.tmp / "elsewhere" / "packed";
  load(model.dir(), "f32", folder.string());
  only_file(folder);
  EXPECT_TRUE(load(model.dir(), "f32", folder.string())->packed_from_cache());
  EXPECT_FALSE(fs::exists(model.cache_dir()));
}

TEST(PackedCache, DirectoryResolvesAutoOffAndAFolder) {
  const ModelCopy model;
  EXPECT_EQ(PackedCache::directory("auto", model.dir()), model.cache_dir());
  EXPECT_EQ(PackedCache::directory("off", model.dir()), fs::path());
  EXPECT_EQ(PackedCache::directory("", model.dir()), fs::path());
  EXPECT_EQ(PackedCache::directory("/x/y", model.dir()), fs::path("/x/y"));
  // a model folder that cannot be written (here: does not exist) falls back to the user cache
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  ::setenv("XDG_CACHE_HOME", "/xdg-test", 1);
  EXPECT_EQ(PackedCache::directory("auto", model.tmp / "missing"), fs::path("/xdg-test/writeup"));
  if (old) ::setenv("XDG_CACHE_HOME", saved.c_str(), 1); else ::unsetenv("XDG_CACHE_HOME");
}

// $WRITEUP_PACKED_CACHE replaces what "auto" means (off or a folder); an explicit setting wins.
TEST(PackedCache, TheEnvironmentRedirectsAutoOnly) {
  const ModelCopy model;
  const char* old = std::getenv("WRITEUP_PACKED_CACHE");
  const std::string saved = old ? old : "";
  ::setenv("WRITEUP_PACKED_CACHE", "off", 1);
  EXPECT_EQ(PackedCache::directory("auto", model.dir()), fs::path());
  EXPECT_EQ(PackedCache::directory("/x/y", model.dir()), fs::path("/x/y"));
  ::setenv("WRITEUP_PACKED_CACHE", "/env-cache", 1);
  EXPECT_EQ(PackedCache::directory("auto", model.dir()), fs::path("/env-cache"));
  ::setenv("WRITEUP_PACKED_CACHE", "", 1);  // empty: not set
  EXPECT_EQ(PackedCache::directory("auto", model.dir()), model.cache_dir());
  if (old) ::setenv("WRITEUP_PACKED_CACHE", saved.c_str(), 1); else ::unsetenv("WRITEUP_PACKED_CACHE");
}

// A checkpoint that needs converting (F16): a warm load does not convert the block matrices, and
// the generic path, which would need them, says so.
TEST(PackedCache, AWarmLoadOfAConvertedCheckpointSkipsTheDenseMatrices) {
  const ModelCopy model("tiny-gpt2-f16");
  const auto cold = load(model.dir(), "f32", "auto");
  EXPECT_TRUE(cold->weights().projections);
  const auto warm = load(model.dir(), "f32", "auto");
  ASSERT_TRUE(warm->packed_from_cache());
  EXPECT_FALSE(warm->weights().projections);
  EXPECT_FALSE(warm->weights().h[0].mlp_c_fc_weight.defined());
  EXPECT_TRUE(warm->weights().h[0].ln_1_weight.defined());
  EXPECT_TRUE(at::equal(logits(*warm), logits(*cold)));
  RunnerOptions o;
  o.generic = true;
  EXPECT_THROW(ModelRunner(warm, o), std::invalid_argument);
  EXPECT_NO_THROW(ModelRunner(cold, o));
}

// The same data hashes the same; one changed byte anywhere changes the checksum.
TEST(PackedCache, ChecksumSeesEveryByte) {
  std::vector<unsigned char> data((3u << 20) + 64 * 5);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<unsigned char>(i * 131 + 7);
  const auto h = PackedCache::checksum(data.data(), data.size());
  EXPECT_EQ(PackedCache::checksum(data.data(), data.size()), h);
  EXPECT_EQ(PackedCache::checksum(data.data(), data.size(), /*parallel=*/false), h);
  for (const std::size_t at : {std::size_t{0}, std::size_t{1} << 20, data.size() / 2, data.size() - 1}) {
    data[at] ^= 1;
    EXPECT_NE(PackedCache::checksum(data.data(), data.size()), h) << at;
    data[at] ^= 1;
  }
  EXPECT_NE(PackedCache::checksum(data.data(), data.size() - 64), h);
}

TEST(PackedCache, ConfigTakesAutoByDefaultNullAsOffAndRejectsAFile) {
  using writeup::server::ServerConfig;
  nlohmann::json j = {{"models", {{{"name", "m"}, {"path", "/m"}}}}};
  EXPECT_EQ(ServerConfig::from_json(j).models[0].packed_cache, "auto");
  j["models"][0]["packed_cache"] = nullptr;
  EXPECT_EQ(ServerConfig::from_json(j).models[0].packed_cache, "");
  j["models"][0]["packed_cache"] = "/tmp/somewhere";
  EXPECT_EQ(ServerConfig::from_json(j).models[0].packed_cache, "/tmp/somewhere");
  const t::TempDir tmp;
  t::write_file(tmp / "f", "x");
  j["models"][0]["packed_cache"] = (tmp / "f").string();
  try {
    ServerConfig::from_json(j);
    ADD_FAILURE() << "a file was taken as the cache folder";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("models[0].packed_cache"), std::string::npos) << e.what();
  }
  j["models"][0]["packed_cache"] = 3;
  EXPECT_THROW(ServerConfig::from_json(j), std::exception);
}

// Static-file containment and the slow-client shedding list of the HTTP server.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/server/pending_heads.hpp"
#include "writeup/server/static_files.hpp"

namespace fs = std::filesystem;
using writeup::server::contained_file;
using writeup::server::PendingHeads;

namespace {

// A temporary tree: root/site/{index.html,sub/a.txt,out -> ../secret.txt, in -> sub/a.txt}
// and root/secret.txt.
class StaticTree : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("writeup_static_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "site" / "sub");
    std::ofstream(base_ / "site" / "index.html") << "index";
    std::ofstream(base_ / "site" / "sub" / "a.txt") << "a";
    std::ofstream(base_ / "secret.txt") << "secret";
    fs::create_symlink("../secret.txt", base_ / "site" / "out");
    fs::create_symlink("sub/a.txt", base_ / "site" / "in");
  }
  void TearDown() override { fs::remove_all(base_); }
  std::string site() const { return (base_ / "site").string(); }
  fs::path base_;
};

}  // namespace

TEST_F(StaticTree, ServesFilesInsideTheRoot) {
  EXPECT_EQ(contained_file(site(), "/"), fs::canonical(base_ / "site" / "index.html"));
  EXPECT_EQ(contained_file(site(), "/sub/a.txt"), fs::canonical(base_ / "site" / "sub" / "a.txt"));
  EXPECT_EQ(contained_file(site(), "//sub//./a.txt"), fs::canonical(base_ / "site" / "sub" / "a.txt"));
  EXPECT_EQ(contained_file(site(), "/in"), fs::canonical(base_ / "site" / "sub" / "a.txt"));
}

TEST_F(StaticTree, NeverLeavesTheRoot) {
  for (const char* path : {"/../secret.txt", "/../../../../etc/hostname", "/sub/../../secret.txt", "//etc/hostname",
                           "/etc/hostname", "/out", "/sub", "/missing.html", "/..", "/a\\..\\..\\secret.txt"}) {
    EXPECT_EQ(contained_file(site(), path), std::nullopt) << path;
  }
}

TEST_F(StaticTree, AMissingRootServesNothing) {
  // The old check compared against an empty root when canonical() failed: everything matched.
  EXPECT_EQ(contained_file((base_ / "nope").string(), "/../secret.txt"), std::nullopt);
  EXPECT_EQ(contained_file((base_ / "nope").string(), "/etc/hostname"), std::nullopt);
  EXPECT_EQ(contained_file("", "/etc/hostname"), std::nullopt);
  EXPECT_EQ(contained_file((base_ / "secret.txt").string(), "/"), std::nullopt);
}

TEST(PendingHeads, EvictsTheOldestWaiterFirst) {
  PendingHeads heads;
  std::vector<int> evicted;
  const auto a = heads.add([&] { evicted.push_back(1); });
  heads.add([&] { evicted.push_back(2); });
  heads.add([&] { evicted.push_back(3); });
  heads.remove(a);  // its head arrived
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_TRUE(heads.evict_oldest());
  EXPECT_TRUE(heads.evict_oldest());
  EXPECT_FALSE(heads.evict_oldest());
  EXPECT_EQ(evicted, (std::vector<int>{2, 3}));
  heads.remove(0);  // ignored
  heads.remove(a);  // already gone
  EXPECT_EQ(heads.size(), 0u);
}

TEST(FormFields, AnInvalidUtf8KeyGivesAnErrorThatCanBeSent) {
  try {
    writeup::api::parse_form_urlencoded("%FF=1");
    FAIL() << "expected an ApiError";
  } catch (const writeup::api::ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.param(), "\xEF\xBF\xBD");
    EXPECT_EQ(e.to_json()["error"]["param"], "\xEF\xBF\xBD");  // the param holds no client bytes
    EXPECT_NE(e.to_wire().find("not valid UTF-8"), std::string::npos);
  }
}

TEST(ApiError, ToWireReplacesInvalidUtf8) {
  const writeup::api::ApiError e(404, "not_found", "no such route: GET /\xff", "\xfe");
  const auto wire = e.to_wire();
  EXPECT_NE(wire.find("GET /\xEF\xBF\xBD"), std::string::npos) << wire;
  EXPECT_FALSE(nlohmann::json::parse(wire, nullptr, false).is_discarded()) << wire;
}

// Issue 14: what the editor page's bundle needs from the static files.
TEST(StaticFiles, HashedAssetsPageRoutesAndTypes) {
  using writeup::server::content_type_for;
  using writeup::server::is_hashed_asset;
  using writeup::server::is_page_route;
  EXPECT_TRUE(is_hashed_asset("/assets/index-B4x_9kQz.js"));
  EXPECT_TRUE(is_hashed_asset("/assets/index-DiwrgTda.css"));
  EXPECT_FALSE(is_hashed_asset("/assets/index.js"));        // no hash
  EXPECT_FALSE(is_hashed_asset("/assets/index-abc.js"));    // too short to be one
  EXPECT_FALSE(is_hashed_asset("/index-B4x_9kQz.js"));      // not under /assets/
  EXPECT_FALSE(is_hashed_asset("/assets/x/y-B4x_9kQz.js"));  // nested
  EXPECT_FALSE(is_hashed_asset("/assets/a-B4x_9k!z.js"));
  EXPECT_TRUE(is_page_route("/"));
  EXPECT_TRUE(is_page_route("/settings"));
  EXPECT_TRUE(is_page_route("/doc/42/"));
  EXPECT_FALSE(is_page_route("/favicon.ico"));
  EXPECT_FALSE(is_page_route("/assets/missing-12345678.js"));
  EXPECT_FALSE(is_page_route("/v1/nope"));
  EXPECT_FALSE(is_page_route("/v1"));
  EXPECT_FALSE(is_page_route("/ws/other"));
  EXPECT_FALSE(is_page_route("//etc/hostname"));
  EXPECT_FALSE(is_page_route("/a/../b"));
  EXPECT_FALSE(is_page_route("/a/./b"));
  EXPECT_FALSE(is_page_route("/a\\b"));
  EXPECT_FALSE(is_page_route(std::string_view("/a\0b", 4)));
  EXPECT_FALSE(is_page_route(""));
  EXPECT_EQ(content_type_for("a/index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(content_type_for("x.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(content_type_for("x.css"), "text/css; charset=utf-8");
  EXPECT_EQ(content_type_for("x.woff2"), "font/woff2");
  EXPECT_EQ(content_type_for("x.svg"), "image/svg+xml");
  EXPECT_EQ(content_type_for("x.unknown"), "application/octet-stream");
}

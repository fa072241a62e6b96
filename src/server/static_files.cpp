#include "writeup/server/static_files.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "writeup/util/hash.hpp"

#ifndef WRITEUP_SOURCE_WEB_DIST
#define WRITEUP_SOURCE_WEB_DIST ""
#endif

namespace writeup::server {
namespace fs = std::filesystem;

std::optional<fs::path> contained_file(const std::string& root_dir, std::string_view target_path) {
  std::error_code ec;
  const auto root = fs::canonical(root_dir, ec);
  if (ec || root.empty() || !fs::is_directory(root, ec)) return std::nullopt;
  fs::path rel;
  std::size_t pos = 0;
  while (pos <= target_path.size()) {
    auto slash = target_path.find('/', pos);
    if (slash == std::string_view::npos) slash = target_path.size();
    const auto segment = target_path.substr(pos, slash - pos);
    pos = slash + 1;
    if (segment.empty() || segment == ".") continue;
    if (segment == ".." || segment.find('\0') != std::string_view::npos || segment.find('\\') != std::string_view::npos) {
      return std::nullopt;
    }
    rel /= std::string(segment);
  }
  if (rel.empty()) rel = "index.html";
  const auto file = fs::canonical(root / rel, ec);
  if (ec) return std::nullopt;
  const auto [r, f] = std::mismatch(root.begin(), root.end(), file.begin(), file.end());
  if (r != root.end() || !fs::is_regular_file(file, ec)) return std::nullopt;
  return file;
}

std::string content_type_for(const fs::path& file) {
  const auto ext = file.extension().string();
  if (ext == ".html" || ext == ".htm") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".webmanifest") return "application/manifest+json";
  if (ext == ".txt" || ext == ".md") return "text/plain; charset=utf-8";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
  if (ext == ".webp") return "image/webp";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".woff") return "font/woff";
  if (ext == ".wasm") return "application/wasm";
  return "application/octet-stream";
}

bool is_hashed_asset(std::string_view path) {
  constexpr std::string_view prefix = "/assets/";
  if (path.substr(0, prefix.size()) != prefix) return false;
  const auto name = path.substr(prefix.size());
  const auto dot = name.find('.');
  const auto dash = name.substr(0, dot).rfind('-');
  if (dot == std::string_view::npos || dash == std::string_view::npos || name.find('/') != std::string_view::npos) {
    return false;
  }
  const auto hash = name.substr(dash + 1, dot - dash - 1);
  return hash.size() >= 8 && std::all_of(hash.begin(), hash.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
         });
}

bool is_page_route(std::string_view path) {
  if (path.empty() || path[0] != '/' || path.substr(0, 4) == "/v1/" || path == "/v1" || path.substr(0, 4) == "/ws/") {
    return false;
  }
  // Plain segments only: no "." or ".." (a traversal attempt stays a 404), no empty one but a
  // trailing slash's, no backslash or NUL.
  for (std::size_t pos = 1; pos < path.size();) {
    auto slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const auto segment = path.substr(pos, slash - pos);
    if (segment.empty() && slash != path.size() - 1) return false;
    if (segment == "." || segment == ".." || segment.find_first_of(std::string_view("\\\0", 2)) != std::string_view::npos) {
      return false;
    }
    pos = slash + 1;
  }
  const auto last = path.substr(path.rfind('/') + 1);
  return last.find('.') == std::string_view::npos;
}

namespace {

// A strong validator from the file's size and modification time (the bundle is replaced whole).
std::string etag_of(const fs::path& file) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  const auto mtime = fs::last_write_time(file, ec).time_since_epoch().count();
  return "\"" + to_hex64(static_cast<std::uint64_t>(size)) + "-" + to_hex64(static_cast<std::uint64_t>(mtime)) + "\"";
}

// If-None-Match: "*" or a comma-separated list of (possibly weak) tags.
bool matches(std::string_view if_none_match, const std::string& etag) {
  std::size_t pos = 0;
  while (pos < if_none_match.size()) {
    auto comma = if_none_match.find(',', pos);
    if (comma == std::string_view::npos) comma = if_none_match.size();
    auto tag = if_none_match.substr(pos, comma - pos);
    pos = comma + 1;
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream body;
  body << in.rdbuf();
  if (!in.good() && !in.eof()) throw std::runtime_error("could not read " + file.filename().string());
  return body.str();
}

}  // namespace

std::optional<http::response<http::string_body>> static_response(const http::request<http::string_body>& req,
                                                                  std::string_view path, const std::string& root_dir) {
  auto file = contained_file(root_dir, path);
  const bool page = !file && is_page_route(path);
  if (page) file = contained_file(root_dir, "/index.html");
  if (!file) return std::nullopt;
  http::response<http::string_body> res{http::status::ok, req.version()};
  res.set(http::field::server, "writeup");
  res.set(http::field::content_type, content_type_for(*file));
  res.set(http::field::cache_control,
          !page && is_hashed_asset(path) ? "public, max-age=31536000, immutable" : "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  const auto etag = etag_of(*file);
  res.set(http::field::etag, etag);
  res.keep_alive(req.keep_alive());
  const auto inm = req[http::field::if_none_match];
  if (!inm.empty() && matches(std::string_view(inm.data(), inm.size()), etag)) {
    res.result(http::status::not_modified);
    res.prepare_payload();
    return res;
  }
  res.body() = read_file(*file);  // HEAD: the session sends these headers without the body
  res.prepare_payload();
  return res;
}

std::string default_web_dir() {
  std::vector<fs::path> candidates;
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto bin = exe.parent_path();
    candidates = {bin / "web", bin / ".." / "share" / "writeup" / "web", bin / ".." / "src" / "web" / "dist"};
  }
  if (*WRITEUP_SOURCE_WEB_DIST) candidates.emplace_back(WRITEUP_SOURCE_WEB_DIST);
  for (const auto& dir : candidates) {
    if (fs::is_regular_file(dir / "index.html", ec)) return fs::canonical(dir, ec).string();
  }
  return "";
}

}  // namespace writeup::server

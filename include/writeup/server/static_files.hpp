#pragma once
// The files of server.static_dir: the editor page's built bundle (src/web) or any folder of
// files. Contained in the folder, typed, cached right (hashed assets for a year, everything
// else revalidated by ETag) and answering the page's own routes with its index.html.
#include <boost/beast/http.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace writeup::server {

namespace http = boost::beast::http;

// The regular file under `root_dir` that a request path names ("/" = index.html), or nullopt.
// Containment holds twice: the path is rebuilt from its segments with empty and "." ones
// dropped and ".." refused (so "//etc/hostname" and "/../x" stay inside), and the resolved
// file (symlinks followed) must still lie under the resolved root. A missing root gives nullopt.
std::optional<std::filesystem::path> contained_file(const std::string& root_dir, std::string_view target_path);

// Content-Type by extension (text types with charset=utf-8); application/octet-stream otherwise.
std::string content_type_for(const std::filesystem::path& file);

// Whether `path` names a content-hashed build asset (Vite's "/assets/name-HASH.ext", HASH 8+
// characters of [A-Za-z0-9_-]): its bytes never change under that name, so it may be cached
// for a year ("immutable"); anything else is revalidated on every use.
bool is_hashed_asset(std::string_view path);

// Whether a GET of `path` that names no file is one of the page's own routes ("/settings",
// "/doc/42"): plain segments (no "." or "..", no "//"), no extension in the last one, not under
// /v1/ or /ws/. Those get index.html; anything else a 404.
bool is_page_route(std::string_view path);

// The answer to GET/HEAD `req` (path without query: `path`) from `root_dir`: 200 with the file
// (for HEAD too: the session drops the body), 304 when If-None-Match holds its ETag, index.html for a page route;
// nullopt when nothing answers (the caller's 404). Never throws for a bad path; I/O errors
// reading a found file throw std::runtime_error.
std::optional<http::response<http::string_body>> static_response(const http::request<http::string_body>& req,
                                                                  std::string_view path, const std::string& root_dir);

// Where the built editor page is when the config does not name a static_dir: the first folder
// holding an index.html of <binary's folder>/web, <binary's folder>/../share/writeup/web,
// <binary's folder>/../src/web/dist (a build folder inside the source tree) and the source
// tree's src/web/dist as configured; "" when none does (the server then serves the API alone).
std::string default_web_dir();

}  // namespace writeup::server

#pragma once
#include "cli_args.hpp"

namespace writeup::tools {

// `writeup-bench wire --url ws://HOST:PORT [--sessions N] [--requests N] [--batch-size N]
// [--length N] [--model-name NAME] [--runs N]`: the writeup WebSocket protocol over the wire
// against a running server. Returns 1 when any request failed.
int bench_wire(const CliArgs& args);

}  // namespace writeup::tools

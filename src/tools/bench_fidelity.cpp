// writeup-bench fidelity: how far the bf16 and int8 weight formats move a model's logits from
// float32. The model is loaded once per format; the same seeded random token sequences run
// through each (one prefill per sequence, logits at every position), and each position's
// logits are compared with float32's:
//   relative error = max_v |l[v] - l32[v]| / max_v |l32[v]| (max and median over positions),
//   top-1 agreement = the share of positions whose arg-max token is float32's,
//   near ties = the share of positions whose float32 top-1/top-2 gap is under twice the
//   format's largest logit error there (only those can change their arg-max).
#include <ATen/ATen.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/util/threads.hpp"

namespace writeup::tools {

int bench_fidelity(const CliArgs& args) {
  const std::string dir = args.require("model");
  configure_threads(args.get_int("threads", 0));
  const int positions = args.get_int("positions", 2048);
  // Seeded random token sequences of `seq` tokens (a random-weight model has no better text).
  std::vector<std::vector<int>> seqs;
  std::vector<at::Tensor> reference;  // float32 logits per sequence [seq, V]
  for (const std::string format : {"f32", "bf16", "int8"}) {
    model::LoadOptions o;
    o.weights = format;
    const auto model = model::GPT2Model::load(dir, o);
    const auto& cfg = model->config();
    if (seqs.empty()) {
      const int seq = std::min(args.get_int("seq", 256), cfg.n_positions);
      std::mt19937_64 rng(static_cast<std::uint64_t>(args.get_int("seed", 1)));
      std::uniform_int_distribution<int> id(0, cfg.vocab_size - 1);
      for (int left = positions; left > 0; left -= seq) {
        std::vector<int> s(static_cast<std::size_t>(std::min(seq, left)));
        for (auto& t : s) t = id(rng);
        seqs.push_back(std::move(s));
      }
    }
    std::vector<double> rel;
    long agree = 0, total = 0, near = 0;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      auto cache = model->make_cache(1, static_cast<int>(seqs[i].size()));
      const std::vector<model::SequenceChunk> chunk{{0, 0, seqs[i]}};
      const at::Tensor logits = model->forward(chunk, cache, /*all_logits=*/true);  // [T, V]
      if (format == "f32") {
        reference.push_back(logits);
        continue;
      }
      const at::Tensor& ref = reference[i];
      const auto err = (logits - ref).abs().amax(1) / ref.abs().amax(1);
      for (std::int64_t p = 0; p < err.size(0); ++p) rel.push_back(err[p].item<double>());
      agree += logits.argmax(1).eq(ref.argmax(1)).sum().item<std::int64_t>();
      const auto top2 = std::get<0>(ref.topk(2, 1));  // [T, 2]
      const auto gap = top2.select(1, 0) - top2.select(1, 1);
      near += gap.lt((logits - ref).abs().amax(1) * 2).sum().item<std::int64_t>();
      total += logits.size(0);
    }
    if (format == "f32") continue;
    std::printf("{\"bench\":\"fidelity\",\"model\":\"%s\",\"weights\":\"%s\",\"positions\":%ld,"
                "\"max_rel_logit_error\":%.3g,\"median_rel_logit_error\":%.3g,\"top1_agreement\":%.4f,"
                "\"near_ties\":%.4f,\"packed_bytes_vs_f32\":%.3f}\n",
                dir.c_str(), format.c_str(), total, percentile(rel, 1.0), median(rel),
                static_cast<double>(agree) / static_cast<double>(std::max(1L, total)),
                static_cast<double>(near) / static_cast<double>(std::max(1L, total)),
                format == "bf16" ? 0.5 : (1.0 + 4.0 / model::PackedLinear::kInt8Group) / 4.0);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace writeup::tools

#include "cpu_features.hpp"

#include <atomic>

namespace writeup::model {
namespace {

using Kernel = PackedLinear::Kernel;

std::atomic<Kernel> forced{Kernel::automatic};

struct Cpu {
  bool avx512 = false, vnni = false, avx2 = false;
  Cpu() {
#if defined(__x86_64__)
    avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  }
};

const Cpu& cpu() {
  static const Cpu probed;
  return probed;
}

bool forced_to(std::initializer_list<Kernel> allowed) {
  const Kernel f = forced.load(std::memory_order_relaxed);
  for (const Kernel k : allowed) {
    if (f == k) return true;
  }
  return false;
}

}  // namespace

namespace detail {

bool use_avx512() { return cpu().avx512 && forced_to({Kernel::automatic, Kernel::avx512, Kernel::avx512bw}); }
bool use_avx512_vnni() { return cpu().vnni && forced_to({Kernel::automatic, Kernel::avx512}); }
bool use_avx2() { return cpu().avx2 && forced_to({Kernel::automatic, Kernel::avx2}); }

}  // namespace detail

void PackedLinear::force_kernel(Kernel kernel) { forced = kernel; }

const char* PackedLinear::kernel_name(WeightFormat format) {
  if (detail::use_avx512()) {
    if (format != WeightFormat::int8) return "avx512";
    return detail::use_avx512_vnni() ? "avx512-vnni" : "avx512bw";
  }
  return detail::use_avx2() ? "avx2" : "generic";
}

}  // namespace writeup::model

// PackedLinear's weight formats (f32, bf16, int8): every kernel gives the generic kernel's bits,
// a row's result does not depend on its batch, bf16 is exactly float32 on bf16-rounded weights,
// int8 is exactly its written-out spec (8-bit weights x 16-bit activations) and within its
// quantisation steps of f32.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "writeup/model/packed_linear.hpp"

namespace {

using writeup::model::PackedLinear;
using writeup::model::WeightFormat;
using Kernel = PackedLinear::Kernel;

constexpr WeightFormat kFormats[] = {WeightFormat::f32, WeightFormat::bf16, WeightFormat::int8};
// N not a multiple of 16, K not a multiple of the int8 group (64), one tile, many tiles.
constexpr std::pair<int, int> kShapes[] = {{37, 50}, {64, 16}, {130, 33}, {29, 7}, {200, 100}, {65, 161}};

struct KernelGuard {
  explicit KernelGuard(Kernel k) { PackedLinear::force_kernel(k); }
  ~KernelGuard() { PackedLinear::force_kernel(Kernel::automatic); }
};

at::Tensor run(const PackedLinear& lin, const at::Tensor& x, Kernel k) {
  KernelGuard guard(k);
  return lin.forward(x);
}

// The spec's int8 quantisation, written out: per column n and group of 64 k, scale = max|w| / 127,
// q = round-half-even(w / scale) in [-127, 127], dequantised float(q) * scale. w is [K, N].
struct Int8Reference {
  at::Tensor dequantized;  // [K, N]
  at::Tensor scale;        // [K, N]: each weight's group scale
  at::Tensor q;            // [K, N] int32
};
Int8Reference int8_reference(const at::Tensor& w) {
  const int K = static_cast<int>(w.size(0)), N = static_cast<int>(w.size(1));
  Int8Reference r{at::empty({K, N}), at::empty({K, N}), at::empty({K, N}, at::kInt)};
  const auto wa = w.accessor<float, 2>();
  auto da = r.dequantized.accessor<float, 2>();
  auto sa = r.scale.accessor<float, 2>();
  auto qa = r.q.accessor<int, 2>();
  for (int n = 0; n < N; ++n) {
    for (int k0 = 0; k0 < K; k0 += 64) {
      const int k1 = std::min(K, k0 + 64);
      float amax = 0;
      for (int k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(wa[k][n]));
      const float scale = amax / 127.0f;
      for (int k = k0; k < k1; ++k) {
        const float q = scale > 0 ? std::clamp(std::nearbyint(wa[k][n] / scale), -127.0f, 127.0f) : 0.0f;
        da[k][n] = q * scale;
        sa[k][n] = scale;
        qa[k][n] = static_cast<int>(q);
      }
    }
  }
  return r;
}

// The activations' quantisation: per row and group of 64 k, scale = max|x| / 32767 and
// q = round-half-even(x * (32767 / max)), with x and max first scaled by 2^64 (exactly) when
// max < 2^-64 (32767 / max would overflow); [M, K] int32 and the per-k scale [M, K].
std::pair<at::Tensor, at::Tensor> quantize_activations(const at::Tensor& x) {
  const int M = static_cast<int>(x.size(0)), K = static_cast<int>(x.size(1));
  at::Tensor q = at::zeros({M, K}, at::kInt), s = at::zeros({M, K});
  const auto xa = x.accessor<float, 2>();
  auto qa = q.accessor<int, 2>();
  auto sa = s.accessor<float, 2>();
  for (int m = 0; m < M; ++m) {
    for (int k0 = 0; k0 < K; k0 += 64) {
      const int k1 = std::min(K, k0 + 64);
      float amax = 0;
      for (int k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(xa[m][k]));
      if (amax == 0) continue;
      const float boost = amax < 0x1p-64f ? 0x1p64f : 1.0f;
      for (int k = k0; k < k1; ++k) {
        qa[m][k] = static_cast<int>(
            std::clamp(std::nearbyint(xa[m][k] * boost * (32767.0f / (amax * boost))), -32767.0f, 32767.0f));
        sa[m][k] = amax / 32767.0f;
      }
    }
  }
  return {q, s};
}

// The int8 forward as packed_linear.hpp specifies it: y = b + the float32 sum over groups, in
// order, of fma(float(exact integer sum of q_x * q_w), scale_w * scale_x, total).
at::Tensor int8_forward(const at::Tensor& x, const Int8Reference& w, const at::Tensor& b) {
  const int M = static_cast<int>(x.size(0)), K = static_cast<int>(x.size(1)), N = static_cast<int>(w.q.size(1));
  const auto [xq, xs] = quantize_activations(x);
  at::Tensor y = at::empty({M, N});
  const auto qa = xq.accessor<int, 2>(), wq = w.q.accessor<int, 2>();
  const auto sa = xs.accessor<float, 2>(), ws = w.scale.accessor<float, 2>();
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float total = 0;
      for (int k0 = 0; k0 < K; k0 += 64) {
        std::int64_t sum = 0;
        for (int k = k0; k < std::min(K, k0 + 64); ++k) sum += static_cast<std::int64_t>(qa[m][k]) * wq[k][n];
        total = std::fma(static_cast<float>(sum), ws[k0][n] * sa[m][k0], total);
      }
      y[m][n] = total + b[n].item<float>();
    }
  }
  return y;
}

}  // namespace

TEST(PackedFormats, ParsesFormatNames) {
  EXPECT_EQ(writeup::model::parse_weight_format("f32"), WeightFormat::f32);
  EXPECT_EQ(writeup::model::parse_weight_format("bf16"), WeightFormat::bf16);
  EXPECT_EQ(writeup::model::parse_weight_format("int8"), WeightFormat::int8);
  try {
    writeup::model::parse_weight_format("q4");
    FAIL() << "q4 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'q4'"), std::string::npos) << e.what();
  }
  EXPECT_STREQ(writeup::model::to_string(WeightFormat::int8), "int8");
}

// force_kernel selects the kernel it names where the CPU has its instructions (so the tests
// below do run each one), and falls back to generic where it does not.
TEST(PackedFormats, ForcingAKernelSelectsIt) {
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const auto name = [](Kernel k, WeightFormat f) {
    KernelGuard guard(k);
    return std::string(PackedLinear::kernel_name(f));
  };
  EXPECT_EQ(name(Kernel::avx512, WeightFormat::int8), vnni ? "avx512-vnni" : avx512 ? "avx512bw" : "generic");
  EXPECT_EQ(name(Kernel::avx512bw, WeightFormat::int8), avx512 ? "avx512bw" : "generic");
  EXPECT_EQ(name(Kernel::avx512bw, WeightFormat::f32), avx512 ? "avx512" : "generic");
  EXPECT_EQ(name(Kernel::avx512, WeightFormat::bf16), avx512 ? "avx512" : "generic");
  EXPECT_EQ(name(Kernel::avx2, WeightFormat::int8), avx2 ? "avx2" : "generic");
  EXPECT_EQ(name(Kernel::generic, WeightFormat::f32), "generic");
  EXPECT_EQ(name(Kernel::automatic, WeightFormat::int8), name(Kernel::avx512, WeightFormat::int8) != "generic"
                                                             ? name(Kernel::avx512, WeightFormat::int8)
                                                             : name(Kernel::avx2, WeightFormat::int8));
}

// Per format, the AVX-512 (with and without VNNI) and AVX2 kernels (where the CPU has them;
// else they fall back) and the automatic choice give the generic kernel's bits, for 1..17 rows.
TEST(PackedFormats, EveryKernelIsBitwiseTheGenericKernel) {
  at::manual_seed(11);
  for (const auto format : kFormats) {
    for (const auto& [K, N] : kShapes) {
      for (const bool transposed : {false, true}) {
        const auto w = transposed ? at::randn({N, K}) : at::randn({K, N});
        const auto b = transposed ? at::Tensor() : at::randn({N});
        const PackedLinear lin(w, b, transposed, format);
        for (int M = 1; M <= 17; ++M) {
          const auto x = at::randn({M, K});
          const auto want = run(lin, x, Kernel::generic);
          for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2, Kernel::automatic}) {
            EXPECT_TRUE(at::equal(run(lin, x, k), want))
                << to_string(format) << " " << K << "x" << N << " transposed=" << transposed << " M=" << M
                << " kernel " << static_cast<int>(k);
          }
        }
      }
    }
  }
}

// Split over the intra-op threads (a wide matrix, as the LM head's), each format gives the
// bits of one thread.
TEST(PackedFormats, ThreadsDoNotChangeTheResult) {
  at::manual_seed(16);
  const int threads = at::get_num_threads();
  for (const auto format : kFormats) {
    const PackedLinear lin(at::randn({4000, 128}), at::Tensor(), /*transposed=*/true, format);
    for (const int M : {1, 3, 8}) {
      const auto x = at::randn({M, 128});
      at::set_num_threads(1);
      const auto one = lin.forward(x);
      at::set_num_threads(std::max(2, threads));
      for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2, Kernel::generic}) {
        EXPECT_TRUE(at::equal(run(lin, x, k), one)) << to_string(format) << " M=" << M << " kernel " << static_cast<int>(k);
      }
    }
  }
  at::set_num_threads(threads);
}

// A row alone gives the same bits as inside batches of 2..16 rows, at any position, with every
// kernel and format.
TEST(PackedFormats, ARowsResultDoesNotDependOnTheBatch) {
  at::manual_seed(12);
  for (const auto format : kFormats) {
    const auto w = at::randn({150, 70}), b = at::randn({70});
    const PackedLinear lin(w, b, false, format);
    for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2, Kernel::generic}) {
      KernelGuard guard(k);
      for (int r = 0; r < 4; ++r) {
        const auto row = at::randn({1, 150});
        const auto alone = lin.forward(row);
        for (int size = 2; size <= 16; ++size) {
          const int at_pos = (r * 5 + size) % size;
          const auto batch = at::cat({at::randn({at_pos, 150}), row, at::randn({size - 1 - at_pos, 150})});
          EXPECT_TRUE(at::equal(lin.forward(batch).narrow(0, at_pos, 1), alone))
              << to_string(format) << " kernel " << static_cast<int>(k) << " batch " << size;
        }
      }
    }
  }
}

// bf16 stores round-to-nearest-even bf16 weights and computes in float32: bitwise the f32
// kernel run on the same rounded weights (torch's own float -> bfloat16 conversion).
TEST(PackedFormats, Bf16IsTheF32KernelOnBf16RoundedWeights) {
  at::manual_seed(13);
  for (const auto& [K, N] : kShapes) {
    for (const bool transposed : {false, true}) {
      const auto w = transposed ? at::randn({N, K}) : at::randn({K, N});
      const auto b = at::randn({N});
      const auto rounded = w.to(at::kBFloat16).to(at::kFloat);
      const PackedLinear bf16(w, b, transposed, WeightFormat::bf16), f32(rounded, b, transposed);
      EXPECT_TRUE(at::equal(bf16.dequantized(), transposed ? rounded.t() : rounded)) << K << "x" << N;
      EXPECT_EQ(bf16.bytes(), static_cast<std::size_t>((N + 15) / 16 * 16 * K * 2));
      for (const int M : {1, 3, 8, 17}) {
        const auto x = at::randn({M, K});
        EXPECT_TRUE(at::equal(bf16.forward(x), f32.forward(x))) << K << "x" << N << " M=" << M;
      }
    }
  }
}

// int8 is bitwise its written-out spec (the weights' and the activations' quantisation, exact
// integer sums per group, one float32 FMA per group), and stores 1 byte a weight (whole groups
// of k) + the scales.
TEST(PackedFormats, Int8IsItsWrittenOutSpec) {
  at::manual_seed(14);
  for (const auto& [K, N] : kShapes) {
    for (const bool transposed : {false, true}) {
      auto w = transposed ? at::randn({N, K}) : at::randn({K, N});
      if (N > 20) (transposed ? w.narrow(0, 17, 1) : w.narrow(1, 17, 1)).zero_();  // an all-zero column
      const auto b = at::randn({N});
      const auto ref = int8_reference(transposed ? w.t().contiguous() : w);
      const PackedLinear int8(w, b, transposed, WeightFormat::int8);
      EXPECT_TRUE(at::equal(int8.dequantized(), ref.dequantized)) << K << "x" << N;
      const std::size_t tiles = (N + 15) / 16, groups = (K + 63) / 64;
      EXPECT_EQ(int8.bytes(), tiles * 16 * groups * 64 + tiles * groups * 16 * sizeof(float));
      for (const int M : {1, 3, 8, 17}) {
        auto x = at::randn({M, K});
        if (M == 3) x[1].zero_();  // a zero row: scale 0
        if (M == 8) {
          x[2].mul_(1e-36f);  // 32767 / max would overflow
          x[5].mul_(1e-41f);  // subnormal
          x[6].narrow(0, 0, std::min<std::int64_t>(K, 64)).mul_(1e-30f);  // one tiny group among normal ones
        }
        const auto y = int8.forward(x);
        EXPECT_TRUE(at::equal(y, int8_forward(x, ref, b))) << K << "x" << N << " M=" << M;
        EXPECT_TRUE(y.isfinite().all().item<bool>()) << K << "x" << N << " M=" << M;
      }
    }
  }
}

// A row scaled by 2^-120, so small that 32767 / max would overflow float32, still quantises to
// round(x * 32767 / max): with no bias its output is 2^-120 times the row's own, up to the
// scales' loss of precision as subnormals. Every kernel gives the same bits.
TEST(PackedFormats, Int8QuantisesTinyRowsLikeTheirScaledUpSelves) {
  at::manual_seed(15);
  const PackedLinear int8(at::randn({200, 40}), at::Tensor(), false, WeightFormat::int8);
  const auto x = at::randn({2, 200});
  const auto y = run(int8, x, Kernel::generic);
  const auto tiny = run(int8, x * std::ldexp(1.0f, -120), Kernel::generic);
  const double err = ((tiny * std::ldexp(1.0f, 120) - y).abs().max() / y.abs().max()).item<double>();
  EXPECT_LT(err, 1e-2);
  for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2}) {
    EXPECT_TRUE(at::equal(run(int8, x * std::ldexp(1.0f, -120), k), tiny)) << static_cast<int>(k);
  }
}

// A NaN or an infinity in a row reaches that row's outputs as NaN (as float32 arithmetic would),
// and only that row's.
TEST(PackedFormats, Int8PassesNonFiniteInputOn) {
  const PackedLinear int8(at::randn({100, 20}), at::randn({20}), false, WeightFormat::int8);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto x = at::randn({3, 100});
    x[1][70] = bad;
    for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2, Kernel::generic}) {
      const auto y = run(int8, x, k);
      EXPECT_TRUE(y[1].isnan().all().item<bool>()) << bad << " kernel " << static_cast<int>(k);
      EXPECT_TRUE(y[0].isfinite().all().item<bool>() && y[2].isfinite().all().item<bool>());
    }
  }
}

// Against the float32 result, each int8 output element is off by at most
//   sum_k |x_k| * scale_k / 2                     (rounding each weight to its group's step)
// + sum_k (|w_k| + scale_k / 2) * xscale_k / 2      (rounding each activation to its group's step)
// + float32 rounding, bounded loosely by 2K * 2^-24 * sum_k |x_k| (|w_k| + scale_k / 2)
// (a worst case: random rounding errors partly cancel, so the error seen is well under it).
TEST(PackedFormats, Int8ErrorIsWithinHalfAQuantisationStepPerValue) {
  at::manual_seed(15);
  for (const auto& [K, N] : {std::pair<int, int>{768, 96}, {200, 100}, {3072, 48}}) {
    const auto w = at::randn({K, N}) * 0.02, b = at::randn({N});
    const auto ref = int8_reference(w);
    const PackedLinear int8(w, b, false, WeightFormat::int8), f32(w, b);
    const auto x = at::randn({9, K});
    const auto err = (int8.forward(x) - f32.forward(x)).to(at::kDouble).abs();
    const auto xa = x.to(at::kDouble).abs();
    const auto half_step = ref.scale.to(at::kDouble) / 2;
    const auto x_half_step = quantize_activations(x).second.to(at::kDouble) / 2;  // [M, K]
    const auto wa = w.to(at::kDouble).abs() + half_step;
    const double eps = std::ldexp(1.0, -24);
    const auto chains = 2 * K * eps * at::mm(xa, wa);
    const auto bound = at::mm(xa, half_step) + at::mm(x_half_step, wa) + chains + b.to(at::kDouble).abs() * 2 * eps;
    const double worst = (err / bound).max().item<double>();
    EXPECT_LE(worst, 1.0) << K << "x" << N;
    EXPECT_GT(err.max().item<double>(), 0.0) << K << "x" << N << ": int8 changed nothing";
    std::printf("int8 %dx%d: max error / bound = %.3f, max error %.3g\n", K, N, worst, err.max().item<double>());
  }
}

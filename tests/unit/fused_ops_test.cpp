// The packed path's element-wise work (src/model/fused_ops.hpp): the AVX-512 and scalar forms
// give the same bits, each is close to ATen's own op, and PackedLinear's epilogues are exactly
// the op applied after the projection.
#include "model/fused_ops.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "writeup/model/packed_linear.hpp"

namespace {

using writeup::model::PackedLinear;
using writeup::model::WeightFormat;
using Kernel = PackedLinear::Kernel;
namespace fused = writeup::model::detail;

struct KernelGuard {
  explicit KernelGuard(Kernel k) { PackedLinear::force_kernel(k); }
  ~KernelGuard() { PackedLinear::force_kernel(Kernel::automatic); }
};

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& g, const at::Tensor& b, Kernel k) {
  KernelGuard guard(k);
  at::Tensor y = at::empty_like(x);
  fused::layer_norm_rows(x.data_ptr<float>(), x.size(0), x.size(1), g.data_ptr<float>(), b.data_ptr<float>(), 1e-5f,
                          y.data_ptr<float>());
  return y;
}

at::Tensor gelu(const at::Tensor& x, Kernel k) {
  KernelGuard guard(k);
  at::Tensor y = x.clone();
  fused::gelu_inplace(y.data_ptr<float>(), y.numel());
  return y;
}

}  // namespace

// Widths that are and are not a multiple of 16, rows with an offset and a large scale.
TEST(FusedOps, LayerNormIsTheSameBitsEitherWayAndCloseToATen) {
  at::manual_seed(21);
  for (const int C : {768, 1024, 37, 16, 5, 1}) {
    const auto x = at::randn({7, C}) * 3 + 0.5, g = at::randn({C}), b = at::randn({C});
    const auto want = layer_norm(x, g, b, Kernel::generic);
    EXPECT_TRUE(at::equal(layer_norm(x, g, b, Kernel::avx512), want)) << "C=" << C;
    const auto aten = at::layer_norm(x, {C}, g, b, 1e-5);
    EXPECT_LT((want - aten).abs().max().item<float>(), 1e-5f * (1 + aten.abs().max().item<float>())) << "C=" << C;
  }
}

// Ordinary values, tiny and huge ones, signed zeros and non-finite ones.
TEST(FusedOps, GeluIsTheSameBitsEitherWayAndCloseToATen) {
  at::manual_seed(22);
  std::vector<float> special = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 5.0f, -5.0f, 10.0f, -10.0f, 30.0f, -30.0f,
                                100.0f, -100.0f, 1e30f, -1e30f, std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  const auto x = at::cat({at::randn({1000}) * 4, at::from_blob(special.data(), {static_cast<long>(special.size())}).clone()});
  const auto want = gelu(x, Kernel::generic);
  const auto got = gelu(x, Kernel::avx512);
  EXPECT_TRUE(at::equal(got.isnan(), want.isnan()));
  const auto finite = want.isnan().logical_not();
  EXPECT_TRUE(at::equal(got.masked_select(finite), want.masked_select(finite)));
  EXPECT_TRUE(std::isnan(want[-1].item<float>()));
  // Against the exact function (double precision): relative 2e-5 (the float rounding of the
  // exponent's argument, up to ~87, is what grows), or 1e-35 absolute where the exact value is
  // under float's range (x < -10; the exponent is clamped at 88); against ATen's float tanh
  // form (whose 1 + tanh cancels for x < -4): 1e-6 absolute.
  const auto normal = x.abs().lt(1e20);
  const auto xd = x.to(at::kDouble);
  const auto exact = xd / (1 + at::exp(-2 * 0.7978845608028654 * (xd + 0.044715 * xd * xd * xd)));
  const auto rel = ((want.to(at::kDouble) - exact).abs() / (exact.abs() + 5e-31)).masked_select(normal);
  EXPECT_LT(rel.max().item<double>(), 2e-5);
  const auto moderate = x.abs().lt(50);
  EXPECT_LT((want - at::gelu(x, "tanh")).abs().masked_select(moderate).max().item<float>(), 1e-6f);
  EXPECT_EQ(want[1000 + 1].item<float>(), 0.0f);
  EXPECT_EQ(want[1000 + 8].item<float>(), 10.0f);
}

// forward(x, gelu) is gelu(forward(x)) and forward(x, residual, r) is r + forward(x), bit for
// bit, for every format and kernel.
TEST(FusedOps, ProjectionEpiloguesAreTheOpAfterTheProjection) {
  at::manual_seed(23);
  for (const auto format : {WeightFormat::f32, WeightFormat::bf16, WeightFormat::int8}) {
    const PackedLinear lin(at::randn({96, 70}) * 0.2, at::randn({70}), false, format);
    for (const auto k : {Kernel::avx512, Kernel::avx512bw, Kernel::avx2, Kernel::generic}) {
      for (const int M : {1, 5, 9}) {
        const auto x = at::randn({M, 96});
        const auto r = at::randn({M, 70});
        KernelGuard guard(k);
        const auto plain = lin.forward(x);
        at::Tensor activated = plain.clone();
        fused::gelu_inplace(activated.data_ptr<float>(), activated.numel());
        EXPECT_TRUE(at::equal(lin.forward(x, PackedLinear::Epilogue::gelu), activated)) << static_cast<int>(k);
        EXPECT_TRUE(at::equal(lin.forward(x, PackedLinear::Epilogue::residual, r), r + plain)) << static_cast<int>(k);
      }
    }
  }
}

#include "writeup/model/packed_linear.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

using writeup::model::PackedLinear;

TEST(PackedLinear, MatchesAddmm) {
  at::manual_seed(3);
  for (auto [K, N] : {std::pair<int, int>{37, 50}, {64, 16}, {768, 2304}}) {
    const auto w = at::randn({K, N}), b = at::randn({N});
    PackedLinear lin(w, b);
    for (int M : {1, 5, 6, 7, 13}) {
      const auto x = at::randn({M, K});
      const auto want = at::addmm(b, x, w);
      EXPECT_LT((lin.forward(x) - want).abs().max().item<float>(), 2e-4 * std::sqrt(K)) << K << "x" << N << " M=" << M;
    }
  }
}

TEST(PackedLinear, TransposedWeightsAndNoBias) {
  const auto w = at::randn({40, 24});  // [N, K] like wte
  PackedLinear lin(w, at::Tensor(), /*transposed=*/true);
  const auto x = at::randn({3, 24});
  EXPECT_LT((lin.forward(x) - at::mm(x, w.t())).abs().max().item<float>(), 1e-4);
  EXPECT_EQ(lin.out_features(), 40);
}

TEST(PackedLinear, ARowsResultDoesNotDependOnTheBatch) {
  at::manual_seed(5);
  const auto w = at::randn({300, 70}), b = at::randn({70});
  PackedLinear lin(w, b);
  const auto x = at::randn({17, 300});
  const auto together = lin.forward(x);
  for (int r = 0; r < 17; ++r) {
    EXPECT_TRUE(at::equal(lin.forward(x.narrow(0, r, 1)), together.narrow(0, r, 1))) << "row " << r;
    // and in any other company
    const auto mixed = at::cat({at::randn({r % 5, 300}), x.narrow(0, r, 1), at::randn({3, 300})});
    EXPECT_TRUE(at::equal(lin.forward(mixed).narrow(0, r % 5, 1), together.narrow(0, r, 1))) << "row " << r;
  }
}

// Every kernel (AVX-512 groups of tiles, AVX2 tiles, generic) computes each element as one
// fused multiply-add chain in k order plus the bias: bitwise the same as this reference.
TEST(PackedLinear, EveryKernelIsTheSameFmaChain) {
  at::manual_seed(7);
  for (auto [K, N] : {std::pair<int, int>{37, 50}, {64, 16}, {29, 100}, {96, 133}}) {
    const auto w = at::randn({K, N}), b = at::randn({N});
    PackedLinear lin(w, b);
    for (int M : {1, 2, 3, 5, 8, 9, 13, 17}) {
      const auto x = at::randn({M, K});
      auto want = at::empty({M, N});
      const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
      for (int m = 0; m < M; ++m) {
        for (int n = 0; n < N; ++n) {
          float acc = 0;
          for (int k = 0; k < K; ++k) acc = std::fma(xp[m * K + k], wp[k * N + n], acc);
          want[m][n] = acc + bp[n];
        }
      }
      for (auto kernel : {PackedLinear::Kernel::avx512, PackedLinear::Kernel::avx512bw, PackedLinear::Kernel::avx2, PackedLinear::Kernel::generic,
                          PackedLinear::Kernel::automatic}) {
        PackedLinear::force_kernel(kernel);
        EXPECT_TRUE(at::equal(lin.forward(x), want)) << K << "x" << N << " M=" << M << " kernel " << static_cast<int>(kernel);
      }
      PackedLinear::force_kernel(PackedLinear::Kernel::automatic);
    }
  }
}

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

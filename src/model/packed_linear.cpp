#include "writeup/model/packed_linear.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "packed_kernels.hpp"

namespace writeup::model {
namespace {

constexpr std::int64_t T = PackedLinear::kTile;
constexpr std::int64_t G = PackedLinear::kInt8Group;

// Round to nearest even (NaN stays a quiet NaN): the bf16 whose float32 is nearest.
std::uint16_t to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

// Writes rows [k0, k1) of one tile from `block` ([k1 - k0][16] float32, zero past N) into the
// packed storage in `format`; for int8 [k0, k1) is one scale group, stored as kInt8Group / 2
// k pairs of [16][2] bytes (zero past K) `pair_step` bytes apart (its block's other tiles
// between them), and its 16 scales go to `scales`.
void encode(WeightFormat format, const float* block, std::int64_t rows, void* out, float* scales,
            std::int64_t pair_step) {
  const std::int64_t n = rows * T;
  switch (format) {
    case WeightFormat::f32:
      std::memcpy(out, block, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case WeightFormat::bf16: {
      auto* o = static_cast<std::uint16_t*>(out);
      for (std::int64_t i = 0; i < n; ++i) o[i] = to_bf16(block[i]);
      return;
    }
    case WeightFormat::int8: {
      float amax[T] = {};
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t j = 0; j < T; ++j) amax[j] = std::max(amax[j], std::fabs(block[r * T + j]));
      }
      for (std::int64_t j = 0; j < T; ++j) scales[j] = amax[j] / 127.0f;
      auto* o = static_cast<std::int8_t*>(out);
      for (std::int64_t pair = 0; pair < G / 2; ++pair) std::memset(o + pair * pair_step, 0, 2 * T);
      for (std::int64_t r = 0; r < rows; ++r) {
        for (std::int64_t j = 0; j < T; ++j) {
          const float v = scales[j] > 0.0f ? block[r * T + j] / scales[j] : 0.0f;  // |v| <= 127
          // round half to even, as nearbyint in the default rounding mode: adding and taking
          // away 1.5 * 2^23 leaves no fraction bits (exact for |v| < 2^22), and vectorises
          const float q = (v + 12582912.0f) - 12582912.0f;
          o[(r / 2) * pair_step + j * 2 + r % 2] = static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
        }
      }
      return;
    }
  }
}

std::size_t element_size(WeightFormat format) {
  return format == WeightFormat::f32 ? 4 : format == WeightFormat::bf16 ? 2 : 1;
}

}  // namespace

const char* to_string(WeightFormat format) {
  switch (format) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::bf16: return "bf16";
    case WeightFormat::int8: return "int8";
  }
  return "?";
}

WeightFormat parse_weight_format(const std::string& name) {
  if (name == "f32") return WeightFormat::f32;
  if (name == "bf16") return WeightFormat::bf16;
  if (name == "int8") return WeightFormat::int8;
  throw std::invalid_argument("unknown weight format '" + name + "' (expected f32, bf16 or int8)");
}

PackedLinear::PackedLinear(const at::Tensor& weight, const at::Tensor& bias, bool transposed, WeightFormat format)
    : format_(format) {
  const at::Tensor w = weight.to(at::kFloat).contiguous();  // [K, N], or [N, K] when transposed
  k_ = transposed ? w.size(1) : w.size(0);
  n_ = transposed ? w.size(0) : w.size(1);
  tiles_ = (n_ + T - 1) / T;
  const auto storage = format == WeightFormat::f32 ? at::kFloat : format == WeightFormat::bf16 ? at::kShort : at::kChar;
  const std::int64_t groups = (k_ + G - 1) / G;
  const std::int64_t rows = packed_rows(format, k_);
  packed_ = at::empty({tiles_, rows, T}, at::TensorOptions().dtype(storage));
  if (format == WeightFormat::int8) scales_ = at::empty({tiles_, groups, T}, at::kFloat);
  const float* src = w.data_ptr<float>();
  auto* dst = static_cast<char*>(packed_.data_ptr());
  float* sdst = scales_.defined() ? scales_.data_ptr<float>() : nullptr;
  const std::int64_t K = k_, N = n_;
  const std::size_t esize = element_size(format);
  // Tile t, rows [k0, k1) (at most G; for int8 one scale group): gathered into a [rows][16] block zero
  // past N, then encoded in place. Each loop below reads its source sequentially.
  auto pack = [&](std::int64_t t, std::int64_t k0, std::int64_t k1) {
    float local[G * T];  // f32 gathers straight into its place in the packed storage
    float* block = format == WeightFormat::f32 ? reinterpret_cast<float*>(dst) + (t * K + k0) * T : local;
    const std::int64_t cols = std::min(T, N - t * T);
    if (transposed) {  // source rows are output columns
      for (std::int64_t j = 0; j < T; ++j) {
        if (j >= cols) {
          for (std::int64_t k = k0; k < k1; ++k) block[(k - k0) * T + j] = 0.0f;
          continue;
        }
        const float* row = src + (t * T + j) * K;
        for (std::int64_t k = k0; k < k1; ++k) block[(k - k0) * T + j] = row[k];
      }
    } else {  // source rows are k
      for (std::int64_t k = k0; k < k1; ++k) {
        float* out = block + (k - k0) * T;
        std::memcpy(out, src + k * N + t * T, static_cast<std::size_t>(cols) * sizeof(float));
        std::fill(out + cols, out + T, 0.0f);
      }
    }
    if (format == WeightFormat::f32) return;
    if (format == WeightFormat::bf16) {
      encode(format, block, k1 - k0, dst + static_cast<std::size_t>((t * rows + k0) * T) * esize, nullptr, 0);
      return;
    }
    encode(format, block, k1 - k0, dst + 2 * detail::int8_block_row(t, k0 / 2, tiles_, rows / 2),
           sdst + detail::int8_block_row(t, k0 / G, tiles_, groups), 2 * detail::int8_block_step(t, tiles_));
  };
  if (transposed) {  // a tile is 16 source rows: threads split the tiles, by whole blocks of
                     // them (int8 interleaves a block's tiles: no line written by two threads)
    constexpr std::int64_t S = kInt8BlockTiles;
    at::parallel_for(0, (tiles_ + S - 1) / S, 1, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t t = b0 * S; t < std::min(tiles_, b1 * S); ++t) {
        for (std::int64_t k0 = 0; k0 < K; k0 += G) pack(t, k0, std::min(K, k0 + G));
      }
    });
  } else {  // blocks of source rows (an int8 group, else 16: fewer streams to read at once):
            // threads split the blocks, each fills every tile's lines
    const std::int64_t B = format == WeightFormat::int8 ? G : 16;
    at::parallel_for(0, (K + B - 1) / B, 1, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        for (std::int64_t t = 0; t < tiles_; ++t) pack(t, b * B, std::min(K, (b + 1) * B));
      }
    });
  }
  bias_ = at::zeros({tiles_ * T}, at::kFloat);
  if (bias.defined()) bias_.narrow(0, 0, n_).copy_(bias.to(at::kFloat));
}

PackedLinear PackedLinear::from_parts(WeightFormat format, std::int64_t k, std::int64_t n, at::Tensor packed,
                                      at::Tensor scales, at::Tensor bias) {
  const std::int64_t tiles = (n + T - 1) / T, groups = (k + G - 1) / G;
  const auto storage = format == WeightFormat::f32 ? at::kFloat : format == WeightFormat::bf16 ? at::kShort : at::kChar;
  auto fits = [](const at::Tensor& t, at::ScalarType type, std::vector<std::int64_t> shape) {
    return t.defined() && t.scalar_type() == type && t.sizes() == at::IntArrayRef(shape) && t.is_contiguous();
  };
  if (k <= 0 || n <= 0 || !fits(packed, storage, {tiles, packed_rows(format, k), T})) {
    throw std::invalid_argument("packed weights do not match a [" + std::to_string(k) + ", " + std::to_string(n) +
                                "] " + to_string(format) + " layer");
  }
  if (format == WeightFormat::int8 ? !fits(scales, at::kFloat, {tiles, groups, T}) : scales.defined()) {
    throw std::invalid_argument("packed int8 scales do not match the layer");
  }
  if (!fits(bias, at::kFloat, {tiles * T})) throw std::invalid_argument("packed bias does not match the layer");
  PackedLinear out;
  out.format_ = format;
  out.k_ = k;
  out.n_ = n;
  out.tiles_ = tiles;
  out.packed_ = std::move(packed);
  out.scales_ = std::move(scales);
  out.bias_ = std::move(bias);
  return out;
}

std::size_t PackedLinear::bytes() const {
  std::size_t total = packed_.defined() ? packed_.nbytes() : 0;
  if (scales_.defined()) total += scales_.nbytes();
  return total;
}

at::Tensor PackedLinear::dequantized() const {
  at::Tensor out = at::empty({k_, n_}, at::kFloat);
  float* o = out.data_ptr<float>();
  const std::int64_t groups = (k_ + G - 1) / G;
  for (std::int64_t k = 0; k < k_; ++k) {
    for (std::int64_t n = 0; n < n_; ++n) {
      const std::int64_t i = ((n / T) * k_ + k) * T + n % T;  // f32, bf16
      // int8: byte (n % 16, k % 2) of tile n / 16's k pair k / 2
      const std::int64_t pair = 2 * detail::int8_block_row(n / T, k / 2, tiles_, groups * G / 2) + (n % T) * 2 + k % 2;
      float v = 0;
      switch (format_) {
        case WeightFormat::f32: v = packed_.data_ptr<float>()[i]; break;
        case WeightFormat::bf16:
          v = detail::bf16_to_float(static_cast<std::uint16_t>(packed_.data_ptr<std::int16_t>()[i]));
          break;
        case WeightFormat::int8:
          v = static_cast<float>(packed_.data_ptr<std::int8_t>()[pair]) *
              scales_.data_ptr<float>()[detail::int8_block_row(n / T, k / G, tiles_, groups) + n % T];
          break;
      }
      o[k * n_ + n] = v;
    }
  }
  return out;
}

at::Tensor PackedLinear::forward(const at::Tensor& input) const { return forward(input, Epilogue::none); }

at::Tensor PackedLinear::forward(const at::Tensor& input, Epilogue epilogue, const at::Tensor& residual) const {
  const at::Tensor x = input.contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k_ && x.scalar_type() == at::kFloat,
              "PackedLinear expects float32 [M, ", k_, "]");
  at::Tensor r;
  if (epilogue == Epilogue::residual) {
    r = residual.contiguous();
    TORCH_CHECK(r.dim() == 2 && r.size(0) == x.size(0) && r.size(1) == n_ && r.scalar_type() == at::kFloat,
                "PackedLinear's residual must be float32 [M, ", n_, "]");
  }
  at::Tensor y = at::empty({x.size(0), n_}, x.options());  // [M, N]
  forward(x.data_ptr<float>(), x.size(0), y.data_ptr<float>(), epilogue, r.defined() ? r.data_ptr<float>() : nullptr);
  return y;
}

void PackedLinear::forward(const float* x, std::int64_t M, float* y, Epilogue epilogue, const float* residual) const {
  detail::PackedView v;
  v.format = format_;
  v.K = k_;
  v.N = n_;
  v.tiles = tiles_;
  v.weights = packed_.data_ptr();
  v.scales = scales_.defined() ? scales_.data_ptr<float>() : nullptr;
  v.bias = bias_.data_ptr<float>();
  v.epilogue = epilogue;
  v.residual = residual;
  detail::packed_forward(v, x, M, y);
}

}  // namespace writeup::model

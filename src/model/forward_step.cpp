#include "writeup/model/forward_step.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "fused_ops.hpp"
#include "parallel_chunks.hpp"
#include "writeup/model/gpt2_model.hpp"

namespace writeup::model {
namespace {

// y = x @ W + b with HF Conv1D weights [in, out]. A single row goes through GEMV: W^T is
// column-major, so BLAS streams the weights once instead of packing them as GEMM does.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (x.size(0) == 1) return at::addmv(bias, weight.t(), x[0]).unsqueeze(0);
  return at::addmm(bias, x, weight);
}

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

}  // namespace

ForwardStep::ForwardStep(const GPT2Model& model, StepOptions options)
    : model_(model),
      options_(options),
      packed_(model.batch_invariant() && !options.generic),
      buffers_(model.device(), options.max_step_tokens, options.slots, options.max_tokens, model.config().vocab_size) {
  const auto device = model.device();
  if (device.is_cpu()) return;
  c10::impl::VirtualGuardImpl impl(device.type());
  // The cache and the buffers were made on the current stream: this step's stream waits for them.
  c10::Event ready(device.type());
  ready.record(impl.getStream(device));
  stream_ = impl.getStreamFromGlobalPool(device);
  ready.block(*stream_);
  if (device.is_cuda()) {
    host_logits_ = at::empty({options.max_step_tokens, model.config().vocab_size},
                             at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
  }
}

ForwardStep::~ForwardStep() {
  try {
    synchronize();  // nothing of ours may still run when the cache or the buffers go
  } catch (...) {
  }
}

void ForwardStep::synchronize() const {
  if (stream_) stream_->synchronize();
}

at::Tensor ForwardStep::run(std::span<const SequenceChunk> chunks, KVCache& cache, bool all_logits) {
  if (cache.slots() != options_.slots || cache.max_tokens() != options_.max_tokens) {
    throw std::invalid_argument("a KV cache of " + std::to_string(cache.slots()) + " slots x " +
                                std::to_string(cache.max_tokens()) + " positions, the step was made for " +
                                std::to_string(options_.slots) + " x " + std::to_string(options_.max_tokens));
  }
  c10::InferenceMode inference;
  std::optional<c10::StreamGuard> on_stream;
  if (stream_) on_stream.emplace(*stream_);
  try {
    hidden_ = at::Tensor();
    kept_rows_.clear();
    kept_tokens_.clear();
    buffers_.load(chunks, all_logits);
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      if (!chunks[i].keep_hidden) continue;
      kept_rows_.resize(chunks.size(), -1);
      kept_tokens_.resize(chunks.size(), 0);
      kept_rows_[i] = buffers_.chunk_row(i);
      kept_tokens_[i] = static_cast<std::int64_t>(chunks[i].tokens.size());
    }
    return to_host(forward(cache));
  } catch (...) {
    synchronize();  // the host buffers are refilled by the next step: let this one's copies end
    throw;
  }
}

PositionScores ForwardStep::score(std::size_t chunk, std::int64_t first, std::span<const int> targets, int vocab,
                                  std::span<const std::pair<int, float>> bias, int top) {
  const auto m = static_cast<std::int64_t>(targets.size());
  if (!hidden_.defined() || chunk >= kept_rows_.size() || kept_rows_[chunk] < 0) {
    throw std::invalid_argument("score: the last step kept no hidden states for chunk " + std::to_string(chunk));
  }
  if (first < 0 || first + m > kept_tokens_[chunk]) {
    throw std::invalid_argument("score: positions " + std::to_string(first) + ".." + std::to_string(first + m) +
                                " are outside the chunk's " + std::to_string(kept_tokens_[chunk]) + " tokens");
  }
  const int rows = model_.config().vocab_size;
  if (vocab < 1 || vocab > rows) {
    throw std::invalid_argument("score: vocab " + std::to_string(vocab) + " is outside 1.." + std::to_string(rows));
  }
  if (top < 0 || top > vocab) throw std::invalid_argument("score: top " + std::to_string(top) + " is out of range");
  const auto in_vocab = [vocab](int id) { return id >= 0 && id < vocab; };
  for (const int id : targets) {
    if (!in_vocab(id)) throw std::invalid_argument("score: token id " + std::to_string(id) + " is outside the vocabulary");
  }
  for (const auto& b : bias) {
    if (!in_vocab(b.first)) throw std::invalid_argument("score: bias id " + std::to_string(b.first) + " is outside the vocabulary");
  }
  c10::InferenceMode inference;
  std::optional<c10::StreamGuard> on_stream;
  if (stream_) on_stream.emplace(*stream_);
  const auto device = model_.device();
  const auto longs = at::TensorOptions().dtype(at::kLong);
  PositionScores out;
  out.logprobs = at::empty({m}, at::TensorOptions().dtype(at::kFloat));
  if (top > 0) {
    out.top_logprobs = at::empty({m, top}, at::TensorOptions().dtype(at::kFloat));
    out.top_ids = at::empty({m, top}, longs);
  }
  if (m == 0) return out;
  auto ids = at::empty({m}, longs);
  for (std::int64_t i = 0; i < m; ++i) ids.data_ptr<std::int64_t>()[i] = targets[static_cast<std::size_t>(i)];
  ids = ids.to(device);
  at::Tensor bias_ids, bias_values;
  if (!bias.empty()) {
    const auto k = static_cast<std::int64_t>(bias.size());
    bias_ids = at::empty({k}, longs);
    bias_values = at::empty({k}, at::TensorOptions().dtype(at::kFloat));
    for (std::int64_t i = 0; i < k; ++i) {
      bias_ids.data_ptr<std::int64_t>()[i] = bias[static_cast<std::size_t>(i)].first;
      bias_values.data_ptr<float>()[i] = bias[static_cast<std::size_t>(i)].second;
    }
    bias_ids = bias_ids.to(device);
    bias_values = bias_values.to(device);
  }
  try {
    for (std::int64_t s = 0; s < m; s += kScoreRows) {
      const std::int64_t n = std::min(kScoreRows, m - s);
      // [n, vocab] float32: a fresh tensor (the LM head's output, or its float copy)
      at::Tensor logits = lm_head(hidden_.narrow(0, kept_rows_[chunk] + first + s, n)).to(at::kFloat).narrow(1, 0, vocab);
      if (bias_ids.defined()) logits.index_add_(1, bias_ids, bias_values.unsqueeze(0).expand({n, bias_ids.size(0)}));
      const auto lse = at::logsumexp(logits, {1}, /*keepdim=*/true);  // [n, 1]
      out.logprobs.narrow(0, s, n).copy_((logits.gather(1, ids.narrow(0, s, n).unsqueeze(1)) - lse).squeeze(1));
      if (top > 0) {
        const auto best = at::topk(logits, top);
        out.top_logprobs.narrow(0, s, n).copy_(std::get<0>(best) - lse);
        out.top_ids.narrow(0, s, n).copy_(std::get<1>(best));
      }
    }
  } catch (...) {
    synchronize();
    throw;
  }
  return out;
}

void ForwardStep::copy_prefix(KVCache& cache, int from, int to, int tokens) {
  std::optional<c10::StreamGuard> on_stream;
  if (stream_) on_stream.emplace(*stream_);
  cache.copy_prefix(from, to, tokens);
}

at::Tensor ForwardStep::to_host(const at::Tensor& logits) {
  if (!stream_ || !host_logits_.defined()) return logits.to(at::kCPU, at::kFloat).contiguous();
  auto out = host_logits_.narrow(0, 0, logits.size(0));
  out.copy_(logits.to(at::kFloat), /*non_blocking=*/true);
  synchronize();  // the step's only host sync
  return out;
}

at::Tensor ForwardStep::forward(KVCache& cache) {
  const auto& cfg = model_.config();
  const auto& w = model_.weights();
  // [N, C] token + position embeddings of every row
  at::Tensor x = w.wte.index_select(0, buffers_.ids()) + w.wpe.index_select(0, buffers_.positions());
  for (int l = 0; l < cfg.n_layer; ++l) x = block(x, cache, l);
  x = layer_norm(x, w.ln_f_weight, w.ln_f_bias);  // [N, C]
  if (!kept_rows_.empty()) hidden_ = x;  // for score(): only when a chunk asked
  x = x.index_select(0, buffers_.wanted());                                                 // [R, C]
  return lm_head(x);                                                                         // [R, V]
}

at::Tensor ForwardStep::block(const at::Tensor& x, KVCache& cache, int layer) {
  if (packed_) return packed_block(x, cache, layer);
  const auto& cfg = model_.config();
  const auto& b = model_.weights().h[static_cast<std::size_t>(layer)];
  const double eps = cfg.layer_norm_epsilon;
  at::Tensor h = at::layer_norm(x, {cfg.n_embd}, b.ln_1_weight, b.ln_1_bias, eps);  // [N, C]
  at::Tensor qkv = project(h, layer, 0);                                           // [N, 3C]
  at::Tensor a = attention(qkv, cache, layer);                                     // [N, C]
  at::Tensor x1 = x + project(a, layer, 1);                                        // [N, C]
  h = at::layer_norm(x1, {cfg.n_embd}, b.ln_2_weight, b.ln_2_bias, eps);            // [N, C]
  at::Tensor m = at::gelu(project(h, layer, 2), "tanh");                           // [N, 4C]
  return x1 + project(m, layer, 3);                                                // [N, C]
}

// The packed path's block: layer norms as one pass per row, bias + GELU and the residual adds
// as the projections' epilogues (fused_ops.hpp), so no element-wise tensor op runs.
at::Tensor ForwardStep::packed_block(const at::Tensor& x, KVCache& cache, int layer) {
  const auto& b = model_.weights().h[static_cast<std::size_t>(layer)];
  const auto& p = model_.packed_blocks_[static_cast<std::size_t>(layer)];
  using E = PackedLinear::Epilogue;
  at::Tensor qkv = p.c_attn.forward(layer_norm(x, b.ln_1_weight, b.ln_1_bias));  // [N, 3C]
  at::Tensor a = attention(qkv, cache, layer);                                    // [N, C]
  at::Tensor x1 = p.attn_proj.forward(a, E::residual, x);                         // [N, C] x + a W + b
  at::Tensor m = p.c_fc.forward(layer_norm(x1, b.ln_2_weight, b.ln_2_bias), E::gelu);  // [N, 4C]
  return p.mlp_proj.forward(m, E::residual, x1);                                  // [N, C]
}

at::Tensor ForwardStep::layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const {
  const auto& cfg = model_.config();
  if (!packed_) return at::layer_norm(x, {cfg.n_embd}, weight, bias, cfg.layer_norm_epsilon);
  const at::Tensor in = x.contiguous();
  at::Tensor y = at::empty_like(in);  // [N, C]
  detail::layer_norm_rows(in.data_ptr<float>(), in.size(0), cfg.n_embd, weight.data_ptr<float>(), bias.data_ptr<float>(),
                          static_cast<float>(cfg.layer_norm_epsilon), y.data_ptr<float>());
  return y;
}

at::Tensor ForwardStep::project(const at::Tensor& x, int layer, int which) const {
  const auto l = static_cast<std::size_t>(layer);
  if (packed_) {
    const auto& p = model_.packed_blocks_[l];
    const PackedLinear* lin[] = {&p.c_attn, &p.attn_proj, &p.c_fc, &p.mlp_proj};
    return lin[which]->forward(x);
  }
  const auto& b = model_.weights().h[l];
  switch (which) {
    case 0: return linear(x, b.attn_c_attn_weight, b.attn_c_attn_bias);
    case 1: return linear(x, b.attn_c_proj_weight, b.attn_c_proj_bias);
    case 2: return linear(x, b.mlp_c_fc_weight, b.mlp_c_fc_bias);
    default: return linear(x, b.mlp_c_proj_weight, b.mlp_c_proj_bias);
  }
}

// logits = x @ wte^T; one row as GEMV over wte's rows.
at::Tensor ForwardStep::lm_head(const at::Tensor& x) const {
  if (packed_) return model_.packed_lm_head_.forward(x);
  const auto& weight = model_.weights().lm_head;
  if (x.size(0) == 1) return at::mv(weight, x[0]).unsqueeze(0);
  return at::mm(x, weight.t());
}

at::Tensor ForwardStep::attention(const at::Tensor& qkv, KVCache& cache, int layer) {
  at::Tensor out = at::empty({qkv.size(0), model_.config().n_embd}, qkv.options());  // [N, C]
  const std::int64_t decode = buffers_.decode_rows();
  // The packed kernel writes its decode rows' keys/values itself; index writes do the rest.
  const std::int64_t first = packed_ ? decode : 0;
  if (first < buffers_.tokens()) write_kv(qkv, cache, layer, first);
  if (decode > 0) {
    if (packed_) {
      decode_packed(qkv, cache, layer, out);
    } else {
      decode_generic(qkv, cache, layer, out);
    }
  }
  if (!buffers_.prefills().empty()) prefill(qkv, cache, layer, out);
  return out;
}

// Keys and values of rows [first, N) into cache[layer][slot][:, position] in one indexed write each.
void ForwardStep::write_kv(const at::Tensor& qkv, KVCache& cache, int layer, std::int64_t first) {
  using at::indexing::Slice;
  const std::int64_t C = model_.config().n_embd, H = model_.config().n_head, D = model_.config().head_dim();
  const std::int64_t n = buffers_.tokens() - first;
  const auto rows = qkv.narrow(0, first, n);
  const auto slots = buffers_.slots().narrow(0, first, n);
  const auto positions = buffers_.positions().narrow(0, first, n);
  // cache [S, H, T, D] indexed by (slot, :, position): the indexed dims go first -> [n, H, D]
  cache.keys(layer).index_put_({slots, Slice(), positions}, rows.narrow(1, C, C).view({n, H, D}));
  cache.values(layer).index_put_({slots, Slice(), positions}, rows.narrow(1, 2 * C, C).view({n, H, D}));
}

// All decode rows in one batched attention: each row's slot gathered [B, H, T, D], scores over
// every position, the positions at or past the row's length masked out.
void ForwardStep::decode_generic(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out) {
  const std::int64_t C = model_.config().n_embd, H = model_.config().n_head, D = model_.config().head_dim();
  const std::int64_t B = buffers_.decode_rows();
  // Static shapes: T is the cache's length whatever the rows' lengths (on the CPU too, so that
  // the tests run what a captured CUDA step runs).
  const std::int64_t T = cache.max_tokens();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto slots = buffers_.slots().narrow(0, 0, B);
  const auto q = qkv.narrow(0, 0, B).narrow(1, 0, C).view({B, H, 1, D});
  const auto keys = cache.keys(layer).index_select(0, slots);      // [B, H, T, D]
  const auto values = cache.values(layer).index_select(0, slots);  // [B, H, T, D]
  at::Tensor scores = at::matmul(q, keys.transpose(2, 3)).mul_(scale);             // [B, H, 1, T]
  const auto masked = buffers_.arange().unsqueeze(0) >= buffers_.lengths().unsqueeze(1);  // [B, T]
  scores.masked_fill_(masked.view({B, 1, 1, T}), kMinusInf);
  const auto probs = at::softmax(scores, -1, at::kFloat).to(scores.scalar_type());
  out.narrow(0, 0, B).copy_(at::matmul(probs, values).view({B, C}));  // [B, H, 1, D] -> [B, C]
}

// Attention for the decode rows on the CPU, one (row, head) per task, no tensor ops: writes the
// row's key and value into its slot, then softmax(q.K^T * scale) . V over its own positions.
// Each reduction runs in a fixed order (see attend), so a row's result depends on nothing but
// its own sequence, and this pass costs no per-sequence operator overhead.
void ForwardStep::decode_packed(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out) {
  const std::int64_t C = model_.config().n_embd, H = model_.config().n_head, D = model_.config().head_dim();
  const std::int64_t T = cache.max_tokens();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const float* in = qkv.data_ptr<float>();  // [N, 3C] contiguous
  float* o = out.data_ptr<float>();         // [N, C]
  float* kbase = cache.keys(layer).data_ptr<float>();
  float* vbase = cache.values(layer).data_ptr<float>();
  const std::int64_t* slots = buffers_.host_slots();
  const std::int64_t* positions = buffers_.host_positions();
  const std::int64_t slot_stride = H * T * D;
  detail::parallel_chunks(buffers_.decode_rows() * H, 1, [&](std::int64_t b, std::int64_t e) {
    thread_local std::vector<float> scores;  // [T], reused across steps
    scores.resize(static_cast<std::size_t>(T));
    for (std::int64_t task = b; task < e; ++task) {
      const std::int64_t row = task / H, h = task % H;
      const std::int64_t pos = positions[row];
      const float* q = in + row * 3 * C + h * D;
      float* kc = kbase + slots[row] * slot_stride + h * T * D;  // [T, D]
      float* vc = vbase + slots[row] * slot_stride + h * T * D;
      std::memcpy(kc + pos * D, q + C, static_cast<std::size_t>(D) * sizeof(float));
      std::memcpy(vc + pos * D, q + 2 * C, static_cast<std::size_t>(D) * sizeof(float));
      attend(q, kc, vc, pos + 1, D, scale, scores.data(), o + row * C + h * D);
    }
  });
}

// Prefill chunks, one at a time over views of their rows and slot (host offsets: no sync).
// Causal: row i (at position p_i) sees positions 0..p_i.
void ForwardStep::prefill(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out) {
  const std::int64_t C = model_.config().n_embd, H = model_.config().n_head, D = model_.config().head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto all_keys = cache.keys(layer), all_values = cache.values(layer);  // [S, H, T, D]
  for (const auto& p : buffers_.prefills()) {
    const std::int64_t t = p.tokens, total = p.start + t;
    const auto rows = qkv.narrow(0, p.row, t);                                    // [t, 3C]
    const auto q = rows.narrow(1, 0, C).view({t, H, D}).transpose(0, 1);          // [H, t, D]
    const auto keys = all_keys.select(0, p.slot).narrow(1, 0, total);             // [H, total, D]
    const auto values = all_values.select(0, p.slot).narrow(1, 0, total);         // [H, total, D]
    at::Tensor scores = at::matmul(q, keys.transpose(1, 2)).mul_(scale);          // [H, t, total]
    const auto masked = buffers_.arange().narrow(0, 0, total).unsqueeze(0) >
                        buffers_.positions().narrow(0, p.row, t).unsqueeze(1);    // [t, total]
    scores.masked_fill_(masked, kMinusInf);
    const auto probs = at::softmax(scores, -1, at::kFloat).to(scores.scalar_type());
    const auto y = at::matmul(probs, values);                                     // [H, t, D]
    out.narrow(0, p.row, t).copy_(y.transpose(0, 1).reshape({t, C}));
  }
}

}  // namespace writeup::model

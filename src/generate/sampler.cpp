#include "writeup/generate/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "writeup/util/hash.hpp"

namespace writeup::generate {

std::uint64_t sequence_seed(std::uint64_t seed, int index) {
  return splitmix64(splitmix64(seed) ^ (0x5851f42d4c957f2dULL * (static_cast<std::uint64_t>(index) + 1)));
}

Sampler::Sampler(const SamplingParams& params, int index, std::span<const int> prompt)
    : params_(params), rng_(sequence_seed(params.seed, index)), seen_(prompt.begin(), prompt.end()) {
  params_.validate();
}

void Sampler::observe(int token) {
  ++generated_[token];
  seen_.insert(token);
}

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

namespace {

// One scored candidate.
struct Item {
  double score;   // penalised logit / temperature
  double weight;  // exp(score - max score); 0 below a selected top-p set
  int id;
};
using Items = std::vector<Item>;

// Buffers of the selection, reused from token to token.
struct SelectScratch {
  Items band, spare;                  // the items of the bucket being split
  std::vector<std::uint16_t> bucket;  // bucket of each item at the current level
  std::vector<double> mass;           // per bucket
  std::vector<std::uint32_t> count;   // per bucket
};

// Full-vocabulary buffers, one set per thread (samplers of one engine run on its thread).
struct Buffers {
  std::vector<double> values;
  Items items;
  SelectScratch select;
};
Buffers& buffers() {
  thread_local Buffers b;
  return b;
}

// The one order of candidates: higher score first, equal scores by lower id (scores hold no NaN).
// A function object (not a function pointer), so that std::sort and the selection inline it.
constexpr auto higher = [](const Item& x, const Item& y) {
  return x.score > y.score || (x.score == y.score && x.id < y.id);
};

// Greedy: the highest score, the lowest id among equals.
int argmax(const std::vector<double>& a) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < a.size(); ++i) {
    if (a[i] > a[best]) best = i;
  }
  return static_cast<int>(best);
}

// A bound on the difference between two sums of n positive terms taken in different orders,
// relative to the total (each is within (n - 1) * 2^-53 of the exact sum), with slack for the
// few roundings around them.
double rounding_bound(std::size_t n) { return 8.0 * static_cast<double>(n + 2) * 0x1.0p-53; }

// Penalties on `a` (logits as double) in place: repetition over prompt + output, then presence
// and frequency over the output.
void apply_penalties(std::vector<double>& a, const SamplingParams& params, const std::unordered_set<int>& seen,
                     const std::unordered_map<int, int>& generated) {
  const auto in_range = [&](int t) { return t >= 0 && static_cast<std::size_t>(t) < a.size(); };
  if (params.repetition_penalty != 1.0f) {
    for (int t : seen) {
      if (!in_range(t)) continue;
      a[t] = a[t] > 0 ? a[t] / params.repetition_penalty : a[t] * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    for (const auto& [t, n] : generated) {
      if (in_range(t)) a[t] -= params.presence_penalty + params.frequency_penalty * n;
    }
  }
}

double weight(double score, double max) {
  if (std::isfinite(max)) return std::exp(score - max);
  return score == max ? 1.0 : 0.0;  // +inf logits share the mass; all -inf: uniform
}

// The highest and lowest score of items[0, n) (four running pairs: no long dependency chain).
void score_bounds(const Item* items, std::size_t n, double& hi, double& lo) {
  double h[4] = {hi, hi, hi, hi}, l[4] = {lo, lo, lo, lo};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (std::size_t j = 0; j < 4; ++j) {
      h[j] = std::max(h[j], items[i + j].score);
      l[j] = std::min(l[j], items[i + j].score);
    }
  }
  for (; i < n; ++i) {
    h[0] = std::max(h[0], items[i].score);
    l[0] = std::min(l[0], items[i].score);
  }
  hi = std::max(std::max(h[0], h[1]), std::max(h[2], h[3]));
  lo = std::min(std::min(l[0], l[1]), std::min(l[2], l[3]));
}

// Where the running mass of items[0, n), taken in candidate order, first reaches `target`
// (inclusive: mass >= target; else mass > target): that item, its rank and the mass before it
// (an estimate: summed in whatever order the selection visited); found == false when the
// whole mass stays short. Radix selection on the score (buckets are monotone in the score, so
// each holds a run of consecutive ranks): a histogram of mass per bucket finds the bucket the
// target falls in, whose items are then split again; a handful are left to sort. O(n).
struct Crossing {
  bool found;
  std::size_t rank;
  double before;
  Item item;
};
constexpr std::size_t kBuckets = 1024;  // per level
constexpr std::size_t kSortBelow = 48;  // items left to sort

Crossing find_crossing(const Item* items, std::size_t n, double target, bool inclusive,
                       SelectScratch& scratch, double hi0 = NAN, double lo0 = NAN) {
  const auto crosses = [&](double mass) { return inclusive ? mass >= target : mass > target; };
  std::vector<Item>* into = &scratch.band;
  std::vector<Item>* spare = &scratch.spare;
  const Item* view = items;
  std::size_t size = n, base = 0;
  double acc = 0;
  auto& mass = scratch.mass;
  auto& count = scratch.count;
  mass.resize(kBuckets);
  count.resize(kBuckets);
  scratch.bucket.resize(std::max(scratch.bucket.size(), n));
  for (int level = 0; size > kSortBelow && level < 16; ++level) {
    double hi = -INFINITY, lo = INFINITY;
    if (level == 0 && !std::isnan(hi0)) {  // the caller's bounds of items[0, n)
      hi = hi0;
      lo = lo0;
    } else {
      score_bounds(view, size, hi, lo);
    }
    // Scores more than 64 below the highest weigh under e^-64 of it: they share the last bucket.
    const double range = std::min(hi - lo, 64.0);
    if (!(range > 0) || !std::isfinite(hi)) break;  // all tied (or all -inf): the sort orders them
    const double scale = static_cast<double>(kBuckets) / range;
    std::fill(mass.begin(), mass.end(), 0.0);
    std::fill(count.begin(), count.end(), 0u);
    for (std::size_t i = 0; i < size; ++i) {
      const double t = std::min((hi - view[i].score) * scale, static_cast<double>(kBuckets - 1));
      const auto b = static_cast<std::uint16_t>(t);
      scratch.bucket[i] = b;
      mass[b] += view[i].weight;
      ++count[b];
    }
    std::size_t target_bucket = kBuckets;
    for (std::size_t b = 0; b < kBuckets; ++b) {
      if (crosses(acc + mass[b])) {
        target_bucket = b;
        break;
      }
      acc += mass[b];
      base += count[b];
    }
    if (target_bucket == kBuckets) return {false, base, acc, {}};
    into->clear();
    for (std::size_t i = 0; i < size; ++i) {
      if (scratch.bucket[i] == target_bucket) into->push_back(view[i]);
    }
    view = into->data();
    size = into->size();
    std::swap(into, spare);
  }
  into->assign(view, view + size);
  std::sort(into->begin(), into->end(), higher);
  for (std::size_t i = 0; i < size; ++i) {
    if (crosses(acc + (*into)[i].weight)) return {true, base + i, acc, (*into)[i]};
    acc += (*into)[i].weight;
  }
  return {false, base + size, acc, {}};
}

double sum_in_order(const Items& items, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += items[i].weight;
  return s;
}

void sort_prefix(Items& items, std::size_t n) {
  std::sort(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(n), higher);
}

// Top-p over sorted items[0, n): the count of the shortest prefix whose sequential mass
// reaches `need` (all n when none does).
std::size_t top_p_count_sorted(const Items& items, std::size_t n, double need) {
  double mass = 0;
  std::size_t keep = 0;
  while (keep < n && mass < need) mass += items[keep++].weight;
  return keep;
}

// Candidates after penalties (already in `a`), temperature, top-k and top-p. Order::id and
// Order::sorted: items[0, count) are the kept set, in id order (neither top-k nor top-p applies)
// or sorted. Order::selected: the kept set is the `count` highest of items[0, span), in no
// particular order, `last` the lowest of them; the others in the span weigh 0.
enum class Order { id, sorted, selected };
struct Kept {
  std::size_t count;
  Order order;
  std::size_t span = 0;
  Item last{};
  double hi = NAN, lo = NAN;  // score bounds of the span, when known
};

// Moves a selected kept set to the front, so that items[0, count) hold it.
void gather(Items& items, const Kept& kept) {
  if (kept.order != Order::selected || kept.span == kept.count) return;
  std::partition(items.begin(), items.begin() + static_cast<std::ptrdiff_t>(kept.span),
                 [&](const Item& x) { return !higher(kept.last, x); });
}

// Selections up to this size are sorted outright (cheaper than checking estimates).
constexpr std::size_t kSortOutright = 256;

Kept keep_set(const std::vector<double>& a, const SamplingParams& params, Items& items,
              SelectScratch& scratch) {
  const std::size_t V = a.size();
  items.resize(V);  // never shrunk: a sampler's vocabulary keeps its size
  if (params.temperature == 1.0f) {  // x / 1 == x: skip the divisions
    for (std::size_t i = 0; i < V; ++i) items[i] = Item{a[i], 0.0, static_cast<int>(i)};
  } else {
    for (std::size_t i = 0; i < V; ++i) items[i] = Item{a[i] / params.temperature, 0.0, static_cast<int>(i)};
  }
  std::size_t n = V;
  bool sorted = false;
  const bool top_k = params.top_k > 0 && static_cast<std::size_t>(params.top_k) < V;
  if (top_k) {
    n = static_cast<std::size_t>(params.top_k);
    const auto kth = items.begin() + static_cast<std::ptrdiff_t>(n);
    if (n <= kSortOutright) {  // one pass against a heap of the best n: the usual small k
      std::partial_sort(items.begin(), kth, items.end(), higher);
      sorted = true;
    } else {
      std::nth_element(items.begin(), kth, items.end(), higher);
    }
  }
  double max = -INFINITY, min = INFINITY;
  score_bounds(items.data(), n, max, min);
  // The total in id order (no top-k) or in candidate order (top-k, when sorted) is the one a
  // full sort would use; otherwise it is an estimate, covered by the rounding bound.
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    items[i].weight = weight(items[i].score, max);
    total += items[i].weight;
  }
  if (params.top_p >= 1.0f) {
    return {n, top_k ? (sorted ? Order::sorted : Order::selected) : Order::id, n, {}, max, min};
  }
  const bool exact_total = !top_k || sorted;
  if (sorted) return {top_p_count_sorted(items, n, params.top_p * total), Order::sorted};
  const double need = params.top_p * total;
  const Crossing c = find_crossing(items.data(), n, need, /*inclusive=*/true, scratch, max, min);
  const double tol = rounding_bound(n) * total;
  if (c.found && std::isfinite(total)) {
    const bool first_short = c.rank == 0 || c.before + tol < need;
    const bool last_reaches = c.rank + 1 == n || c.before + c.item.weight - tol >= need;
    const Item last = c.item;
    if (first_short && last_reaches && c.rank < kSortOutright) {  // a few: to the front
      Kept kept{c.rank + 1, Order::selected, n, last};
      gather(items, kept);
      kept.span = kept.count;
      return kept;
    }
    if (first_short && last_reaches) {
      for (std::size_t i = 0; i < n; ++i) {  // branch-free: most of a flat row is kept
        Item& x = items[i];
        const bool below = (last.score > x.score) | ((last.score == x.score) & (last.id < x.id));
        x.weight *= static_cast<double>(!below);  // times 1 or 0: exact, and no branch
      }
      return {c.rank + 1, Order::selected, n, last, max, min};
    }
  }
  // Too close to call in floating point: the full sort and its sequential sums decide.
  sort_prefix(items, n);
  if (!exact_total) total = sum_in_order(items, n);
  return {top_p_count_sorted(items, n, params.top_p * total), Order::sorted};
}

// The draw over items[0, n) in candidate order: the first whose sequential share of the mass
// passes u (the last when rounding leaves u past them all).
int draw_in_order(const Items& items, std::size_t n, double u) {
  const double sum = sum_in_order(items, n);
  double cum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    cum += items[i].weight / sum;
    if (u < cum) return items[i].id;
  }
  return items[n - 1].id;
}

// The same draw over a selected kept set, by selection; sorts only when an estimate is too
// close to u to decide.
int draw_selected(Items& items, const Kept& kept, double u, SelectScratch& scratch) {
  const std::size_t n = kept.count;
  if (n > kSortOutright) {
    const double sum = sum_in_order(items, kept.span);  // the rest of the span weighs 0
    const Crossing c =
        find_crossing(items.data(), kept.span, u * sum, /*inclusive=*/false, scratch, kept.hi, kept.lo);
    const double tol = rounding_bound(kept.span);
    if (c.found && c.rank < n && std::isfinite(sum)) {
      const bool before_passed = c.rank == 0 || c.before / sum + tol <= u;
      const bool reaches = c.rank + 1 == n || u < (c.before + c.item.weight) / sum - tol;
      if (before_passed && reaches) return c.item.id;
    }
  }
  gather(items, kept);
  sort_prefix(items, n);
  return draw_in_order(items, n, u);
}

}  // namespace

void Sampler::scores(std::span<const float> logits, std::vector<double>& a) const {
  if (logits.empty()) throw std::invalid_argument("sampler got empty logits");
  a.assign(logits.begin(), logits.end());
  apply_penalties(a, params_, seen_, generated_);
  for (double& v : a) {
    if (std::isnan(v)) v = -INFINITY;  // a NaN never wins and never breaks the order
  }
}

std::vector<std::pair<int, double>> Sampler::candidates(std::span<const float> logits) const {
  Buffers& buf = buffers();
  std::vector<double>& a = buf.values;
  Items& items = buf.items;
  scores(logits, a);
  if (params_.greedy()) return {{argmax(a), 1.0}};
  const Kept kept = keep_set(a, params_, items, buf.select);
  if (kept.order == Order::selected) {
    gather(items, kept);
    sort_prefix(items, kept.count);
  }
  std::vector<std::pair<int, double>> out;
  out.reserve(kept.count);
  const double sum = sum_in_order(items, kept.count);
  for (std::size_t i = 0; i < kept.count; ++i) out.emplace_back(items[i].id, items[i].weight / sum);
  return out;
}

int Sampler::sample(std::span<const float> logits) {
  int token;
  if (params_.greedy()) {
    Buffers& buf = buffers();
    scores(logits, buf.values);
    token = argmax(buf.values);
  } else if (params_.top_k == 0 && params_.top_p >= 1.0f) {
    token = draw_full(logits);
  } else {
    Buffers& buf = buffers();
    Items& items = buf.items;
    scores(logits, buf.values);
    const Kept kept = keep_set(buf.values, params_, items, buf.select);
    if (kept.count == 1) {  // no draw (and no random number) for a single candidate
      token = kept.order == Order::selected ? kept.last.id : items[0].id;
    } else if (kept.order != Order::selected) {
      token = draw_in_order(items, kept.count, uniform());  // in candidate order: sorted or by id
    } else {
      token = draw_selected(items, kept, uniform(), buf.select);
    }
  }
  observe(token);
  return token;
}

int Sampler::draw_full(std::span<const float> logits) {
  // The whole vocabulary in id order, without sorting or per-call allocations.
  std::vector<double>& values = buffers().values;
  scores(logits, values);
  double max = -INFINITY;
  for (double v : values) max = std::max(max, v);
  double sum = 0;
  const double inv_t = 1.0 / params_.temperature;
  for (double& v : values) {
    v = std::exp((v - max) * inv_t);
    sum += v;
  }
  const double target = uniform() * sum;
  double cum = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    cum += values[i];
    if (target < cum) return static_cast<int>(i);
  }
  return static_cast<int>(values.size()) - 1;
}

}  // namespace writeup::generate

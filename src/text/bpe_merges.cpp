#include "writeup/text/bpe_merges.hpp"

#include <algorithm>
#include <functional>

namespace writeup::text {
namespace {

constexpr int kNone = -1;

// A candidate merge: rank in the high half, position of its left symbol in the low half, so
// that the min-heap yields the lowest rank first and, within a rank, the leftmost place first.
std::uint64_t candidate(int rank, int pos) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(rank)) << 32) |
         static_cast<std::uint32_t>(pos);
}
int rank_of(std::uint64_t c) { return static_cast<int>(c >> 32); }
int pos_of(std::uint64_t c) { return static_cast<int>(c & 0xFFFFFFFFu); }

struct Scratch {
  std::vector<int> next, prev;    // the linked list of symbols, by index
  std::vector<std::uint64_t> heap;  // candidate merges
  std::vector<int> pass;           // the positions of one rank's candidates
};
constexpr std::size_t kKeepScratch = 4096;  // symbols; larger buffers are freed after use

}  // namespace

void BpeMerges::add(int left, int right, int rank, int merged) {
  table_.try_emplace(key(left, right), Merge{rank, merged});
}

const BpeMerges::Merge* BpeMerges::find(int left, int right) const {
  const auto it = table_.find(key(left, right));
  return it == table_.end() ? nullptr : &it->second;
}

// Symbols keep the index of their first byte; a merge keeps the left index and unlinks the
// right one, so list order is index order and the heap's tie-break is "leftmost first".
//
// Equivalence with the textbook loop: all candidates of the lowest rank are taken off the heap
// together (one "pass") and merged left to right, each only if its pair is still the one that
// rank names. Pairs that a merge creates go back on the heap and wait for a later pass, even
// when their rank is lower than the current one, exactly as the textbook loop looks for the
// next lowest pair only after finishing a pass.
void BpeMerges::apply(std::vector<int>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  // Scratch space reused across calls on a thread: most words are short, and four
  // allocations per word would cost more than the merging.
  thread_local Scratch scratch;
  std::vector<int>& next = scratch.next;
  std::vector<int>& prev = scratch.prev;
  std::vector<std::uint64_t>& heap = scratch.heap;
  std::vector<int>& pass = scratch.pass;
  const auto size = static_cast<std::size_t>(n);
  next.resize(size);
  prev.resize(size);
  heap.clear();
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = (i + 1 < n) ? i + 1 : kNone;
  }
  for (int i = 0; i + 1 < n; ++i) {
    if (const Merge* m = find(symbols[i], symbols[i + 1])) heap.push_back(candidate(m->rank, i));
  }
  const std::greater<> min_first;
  std::make_heap(heap.begin(), heap.end(), min_first);
  const auto push = [&](int pos) {
    if (pos == kNone || next[pos] == kNone) return;
    if (const Merge* m = find(symbols[pos], symbols[next[pos]])) {
      heap.push_back(candidate(m->rank, pos));
      std::push_heap(heap.begin(), heap.end(), min_first);
    }
  };

  while (!heap.empty()) {
    const int rank = rank_of(heap.front());
    pass.clear();
    while (!heap.empty() && rank_of(heap.front()) == rank) {
      pass.push_back(pos_of(heap.front()));
      std::pop_heap(heap.begin(), heap.end(), min_first);
      heap.pop_back();
    }
    int last_merged = kNone;
    for (const int pos : pass) {
      // Stale when the left symbol was merged away, already merged in this pass, or its pair
      // is no longer the one this rank names.
      if (symbols[pos] == kNone || pos == last_merged || next[pos] == kNone) continue;
      const int right = next[pos];
      const Merge* m = find(symbols[pos], symbols[right]);
      if (m == nullptr || m->rank != rank) continue;
      symbols[pos] = m->merged;
      symbols[right] = kNone;
      next[pos] = next[right];
      if (next[pos] != kNone) prev[next[pos]] = pos;
      last_merged = pos;
      push(prev[pos]);
      push(pos);
    }
  }
  std::size_t w = 0;
  for (int i = 0; i != kNone; i = next[i]) symbols[w++] = symbols[i];  // index 0 never dies
  symbols.resize(w);
  if (scratch.next.capacity() > kKeepScratch) scratch = Scratch();  // a long word's buffers
}

}  // namespace writeup::text

#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace writeup::text {

// The merge table of a byte-level BPE (pair of token ids -> rank and merged id) and the merge
// loop over one word. `apply` gives exactly the result of the textbook loop ("merge the
// lowest-ranked adjacent pair at every non-overlapping place it occurs, left to right, until no
// pair has a rank") in O(n log n): a doubly linked list of symbols and a min-heap of candidate
// merges keyed by (rank, position), whose entries are checked for staleness when popped.
class BpeMerges {
 public:
  struct Merge {
    int rank = 0;
    int merged = 0;
  };

  void reserve(std::size_t n) { table_.reserve(n); }
  // Adds the merge (left, right) -> merged; a pair already present keeps its first rank.
  void add(int left, int right, int rank, int merged);
  // The merge of the adjacent pair (left, right), or nullptr when they do not merge.
  const Merge* find(int left, int right) const;
  std::size_t size() const { return table_.size(); }

  // Merges `symbols` (one word's byte token ids) in place.
  void apply(std::vector<int>& symbols) const;

 private:
  static std::uint64_t key(int left, int right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }

  std::unordered_map<std::uint64_t, Merge> table_;
};

}  // namespace writeup::text

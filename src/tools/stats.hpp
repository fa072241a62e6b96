#pragma once
// Order statistics for the benchmark tools (every figure they print is a median or percentile).
#include <algorithm>
#include <cstddef>
#include <vector>

namespace writeup::tools {

// The value at fraction p (0..1) of the sorted samples; 0 when there are none.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

inline double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

}  // namespace writeup::tools

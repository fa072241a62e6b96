#include "writeup/metrics/registry.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

#include "writeup/util/logging.hpp"

namespace writeup::metrics {
namespace {

enum Type { kCounter, kGauge, kHistogram };
constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram"};

void atomic_add(std::atomic<double>& a, double v) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

bool name_char(char c, bool first, bool colon) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return alpha || (colon && c == ':') || (!first && c >= '0' && c <= '9');
}

void check_metric_name(const std::string& name) {
  bool ok = !name.empty();
  for (std::size_t i = 0; ok && i < name.size(); ++i) ok = name_char(name[i], i == 0, true);
  if (!ok) throw std::invalid_argument("metrics: invalid metric name '" + name + "'");
}

// Returns the labels sorted by name (the series key), validating names and uniqueness.
Labels check_labels(const std::string& metric, const Labels& labels, bool histogram) {
  for (const auto& [name, value] : labels) {
    bool ok = !name.empty() && name.rfind("__", 0) != 0;
    for (std::size_t i = 0; ok && i < name.size(); ++i) ok = name_char(name[i], i == 0, false);
    if (!ok) {
      throw std::invalid_argument("metrics: " + metric + ": invalid label name '" + name + "'");
    }
    if (histogram && name == "le") {
      throw std::invalid_argument("metrics: " + metric + ": label 'le' is reserved");
    }
  }
  Labels key = labels;
  std::sort(key.begin(), key.end());
  for (std::size_t i = 1; i < key.size(); ++i) {
    if (key[i].first == key[i - 1].first) {
      throw std::invalid_argument("metrics: " + metric + ": label '" + key[i].first +
                                  "' given twice");
    }
  }
  return key;
}

std::vector<double> normalize_buckets(std::vector<double> b) {
  if (!b.empty() && b.back() == INFINITY) b.pop_back();
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1])) {
      throw std::invalid_argument(
          "metrics: histogram buckets must be finite and strictly increasing");
    }
  }
  return b;
}

void append_escaped(std::string& out, const std::string& s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `{a="1",b="2"}` (with `extra` appended, e.g. le), or "" when there are no labels.
std::string render_labels(const Labels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += name + "=\"";
    append_escaped(out, value, true);
    out += '"';
  }
  if (!extra.empty()) out += (out.size() > 1 ? "," : "") + extra;
  return out + "}";
}

}  // namespace

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(v));
    return std::string(buf, r.ptr);
  }
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::vector<double> latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60};
}

void Counter::inc(double v) {
  if (!(v >= 0)) throw std::invalid_argument("metrics: counter increment must be >= 0");
  atomic_add(value_, v);
}

void Gauge::inc(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(normalize_buckets(std::move(bounds))),
      buckets_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) {
  // NaN lands in +Inf, as in the Prometheus client libraries.
  const auto i = static_cast<std::size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

std::uint64_t Histogram::count() const { return cumulative_counts().back(); }

std::vector<std::uint64_t> Histogram::cumulative_counts() const {
  std::vector<std::uint64_t> out(bounds_.size() + 1);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

struct Registry::Family {
  struct Callback {
    Labels labels;
    std::shared_ptr<const std::function<double()>> fn;
  };
  Type type = kCounter;
  std::string help;
  std::vector<double> buckets;
  // Keyed by the labels sorted by name; the value keeps the caller's order for printing.
  std::map<Labels, std::pair<Labels, std::unique_ptr<Counter>>> counters;
  std::map<Labels, std::pair<Labels, std::unique_ptr<Gauge>>> gauges;
  std::map<Labels, std::pair<Labels, std::unique_ptr<Histogram>>> histograms;
  std::map<Labels, Callback> callbacks;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(const std::string& name, const std::string& help, int type,
                                   const std::vector<double>* buckets) {
  check_metric_name(name);
  if (type == kCounter && (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0)) {
    throw std::invalid_argument("metrics: counter name '" + name + "' must end in _total");
  }
  auto& slot = families_[name];
  if (!slot) {
    slot = std::make_unique<Family>();
    slot->type = static_cast<Type>(type);
    slot->help = help;
    if (buckets) slot->buckets = *buckets;
    return *slot;
  }
  if (slot->type != type) {
    throw std::invalid_argument("metrics: '" + name + "' is a " + kTypeNames[slot->type] +
                                ", not a " + kTypeNames[type]);
  }
  if (slot->help != help) {
    throw std::invalid_argument("metrics: '" + name + "' registered with different help");
  }
  if (buckets && slot->buckets != *buckets) {
    throw std::invalid_argument("metrics: '" + name + "' registered with different buckets");
  }
  return *slot;
}

Counter& Registry::counter(const std::string& name, const std::string& help,
                           const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto key = check_labels(name, labels, false);
  auto& entry = family(name, help, kCounter, nullptr).counters[key];
  if (!entry.second) entry = {labels, std::make_unique<Counter>()};
  return *entry.second;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto key = check_labels(name, labels, false);
  auto& f = family(name, help, kGauge, nullptr);
  if (f.callbacks.count(key)) {
    throw std::invalid_argument("metrics: '" + name + "' series is already a callback gauge");
  }
  auto& entry = f.gauges[key];
  if (!entry.second) entry = {labels, std::make_unique<Gauge>()};
  return *entry.second;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               std::vector<double> buckets, const Labels& labels) {
  buckets = normalize_buckets(std::move(buckets));
  std::lock_guard lock(mutex_);
  auto key = check_labels(name, labels, true);
  auto& entry = family(name, help, kHistogram, &buckets).histograms[key];
  if (!entry.second) entry = {labels, std::make_unique<Histogram>(buckets)};
  return *entry.second;
}

void Registry::gauge_callback(const std::string& name, const std::string& help,
                              const Labels& labels, std::function<double()> fn) {
  if (!fn) throw std::invalid_argument("metrics: '" + name + "': empty callback");
  std::lock_guard lock(mutex_);
  auto key = check_labels(name, labels, false);
  auto& f = family(name, help, kGauge, nullptr);
  if (f.gauges.count(key)) {
    throw std::invalid_argument("metrics: '" + name + "' series is already a plain gauge");
  }
  f.callbacks[key] = {labels, std::make_shared<const std::function<double()>>(std::move(fn))};
}

std::string Registry::exposition() const {
  // Render under the lock; callback gauges leave a hole filled after it is released, so a
  // callback may use the registry itself.
  struct Pending {
    std::size_t chunk;  // index in `chunks` whose text the sample line goes after
    std::string prefix;
    std::shared_ptr<const std::function<double()>> fn;
  };
  std::vector<std::string> chunks(1);
  std::vector<Pending> pending;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, f] : families_) {
      std::string& out = chunks.back();
      out += "# HELP " + name + " ";
      append_escaped(out, f->help, false);
      out += "\n# TYPE " + name + " " + kTypeNames[f->type] + "\n";
      for (const auto& [key, entry] : f->counters) {
        out += name + render_labels(entry.first) + " " + format_value(entry.second->value()) +
               "\n";
      }
      // Plain and callback gauges share a family: merge them in key order.
      auto g = f->gauges.begin();
      auto c = f->callbacks.begin();
      while (g != f->gauges.end() || c != f->callbacks.end()) {
        if (c == f->callbacks.end() || (g != f->gauges.end() && g->first < c->first)) {
          chunks.back() += name + render_labels(g->second.first) + " " +
                           format_value(g->second.second->value()) + "\n";
          ++g;
        } else {
          pending.push_back({chunks.size() - 1, name + render_labels(c->second.labels),
                             c->second.fn});
          chunks.emplace_back();
          ++c;
        }
      }
      for (const auto& [key, entry] : f->histograms) {
        std::string& hout = chunks.back();
        const Histogram& h = *entry.second;
        const auto counts = h.cumulative_counts();
        for (std::size_t i = 0; i < counts.size(); ++i) {
          const double le = i < h.bounds().size() ? h.bounds()[i] : INFINITY;
          hout += name + "_bucket" +
                  render_labels(entry.first, "le=\"" + format_value(le) + "\"") + " " +
                  format_value(static_cast<double>(counts[i])) + "\n";
        }
        hout += name + "_sum" + render_labels(entry.first) + " " + format_value(h.sum()) + "\n";
        hout += name + "_count" + render_labels(entry.first) + " " +
                format_value(static_cast<double>(counts.back())) + "\n";
      }
    }
  }
  for (auto& p : pending) {
    try {
      const double v = (*p.fn)();
      chunks[p.chunk] += p.prefix + " " + format_value(v) + "\n";
    } catch (const std::exception& e) {
      log::warn("metrics: callback for " + p.prefix + " failed: " + e.what());
    }
  }
  std::string out;
  for (const auto& c : chunks) out += c;
  return out;
}

}  // namespace writeup::metrics

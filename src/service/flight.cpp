#include "writeup/service/flight.hpp"

namespace writeup::service {

Flight::Flight(std::function<void()> on_abandoned) : on_abandoned_(std::move(on_abandoned)) {}

std::uint64_t Flight::join(StreamEvents events) {
  std::lock_guard deliver(deliver_mutex_);
  std::vector<TextDelta> so_far;
  std::uint64_t id = 0;
  bool admitted = false;
  {
    std::lock_guard lock(mutex_);
    if (ended_ || abandoned_) return 0;
    admitted = admitted_;
    for (const auto& d : log_) {
      if (!d.text.empty() || d.tokens > 0) so_far.push_back(d);
    }
    id = ++next_id_;
    subscribers_.emplace(id, events);
  }
  if (admitted && events.on_admitted) events.on_admitted();
  if (!so_far.empty() && events.on_text) events.on_text(so_far);
  return id;
}

void Flight::leave(std::uint64_t id) {
  {
    std::lock_guard lock(mutex_);
    if (subscribers_.erase(id) == 0 || !subscribers_.empty() || ended_ || abandoned_) return;
    abandoned_ = true;
    if (job_) job_->cancel();
  }
  if (on_abandoned_) on_abandoned_();
}

void Flight::set_job(std::shared_ptr<engine::Job> job) {
  std::lock_guard lock(mutex_);
  if (!job) return;
  if (abandoned_) job->cancel();
  // A job that already ended (it can finish before its submitter gets here) is not kept: its
  // processor holds this flight, and the end already dropped what the flight held.
  if (ended_) return;
  job_ = std::move(job);
}

std::vector<StreamEvents> Flight::snapshot(bool last, std::shared_ptr<engine::Job>& dropped) {
  std::lock_guard lock(mutex_);
  std::vector<StreamEvents> out;
  if (ended_) return out;
  out.reserve(subscribers_.size());
  for (const auto& [id, s] : subscribers_) out.push_back(s);
  if (last) {
    ended_ = true;
    subscribers_.clear();
    log_.clear();
    dropped = std::move(job_);  // released outside the lock: it may hold the last processor
  }
  return out;
}

void Flight::admit() {
  std::lock_guard deliver(deliver_mutex_);
  std::vector<StreamEvents> to;
  {
    std::lock_guard lock(mutex_);
    if (ended_ || admitted_) return;
    admitted_ = true;
    for (const auto& [id, s] : subscribers_) to.push_back(s);
  }
  for (auto& s : to) {
    if (s.on_admitted) s.on_admitted();
  }
}

void Flight::text(const std::vector<TextDelta>& deltas) {
  std::lock_guard deliver(deliver_mutex_);
  std::vector<StreamEvents> to;
  {
    std::lock_guard lock(mutex_);
    if (ended_) return;
    for (const auto& d : deltas) {
      if (d.index < 0) continue;
      if (log_.size() <= static_cast<std::size_t>(d.index)) log_.resize(static_cast<std::size_t>(d.index) + 1);
      auto& l = log_[static_cast<std::size_t>(d.index)];
      l.index = d.index;
      l.text += d.text;
      l.tokens = d.tokens;
    }
    for (const auto& [id, s] : subscribers_) to.push_back(s);
  }
  for (auto& s : to) {
    if (s.on_text) s.on_text(deltas);
  }
}

void Flight::done(const std::vector<generate::GeneratedSequence>& results) {
  std::shared_ptr<engine::Job> job;
  std::lock_guard deliver(deliver_mutex_);
  for (auto& s : snapshot(true, job)) {
    if (s.on_done) s.on_done(results);
  }
}

void Flight::error(const ServiceError& error) {
  std::shared_ptr<engine::Job> job;
  std::lock_guard deliver(deliver_mutex_);
  for (auto& s : snapshot(true, job)) {
    if (s.on_error) s.on_error(error);
  }
}

bool Flight::abandoned() const {
  std::lock_guard lock(mutex_);
  return abandoned_;
}

bool Flight::finished() const {
  std::lock_guard lock(mutex_);
  return ended_ || abandoned_;
}

std::size_t Flight::subscribers() const {
  std::lock_guard lock(mutex_);
  return subscribers_.size();
}

void Subscription::cancel() {
  for (const auto& p : parts_) {
    if (p) p->cancel();
  }
  if (auto f = flight_.lock()) f->leave(id_);
}

}  // namespace writeup::service

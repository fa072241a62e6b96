#include "writeup/service/flight.hpp"

namespace writeup::service {

Flight::Flight(std::function<void()> on_abandoned) : on_abandoned_(std::move(on_abandoned)) {}

std::uint64_t Flight::join(StreamEvents events) {
  std::lock_guard lock(mutex_);
  if (ended_ || abandoned_) return 0;
  if (events.on_text) {
    for (const auto& e : log_) events.on_text(e.index, e.delta, e.tokens);
  }
  subscribers_.emplace(++next_id_, std::move(events));
  return next_id_;
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
  // A job that already ended (it can finish on the worker before its submitter gets here) is
  // not kept: its callbacks hold this flight, and end() already dropped what it held.
  if (ended_) return;
  job_ = std::move(job);
}

void Flight::text(int index, const std::string& delta, int tokens) {
  std::lock_guard lock(mutex_);
  if (ended_) return;
  log_.push_back({index, delta, tokens});
  for (auto& [id, s] : subscribers_) {
    if (s.on_text) s.on_text(index, delta, tokens);
  }
}

void Flight::done(const std::vector<generate::GeneratedSequence>& results) {
  end([&](StreamEvents& s) {
    if (s.on_done) s.on_done(results);
  });
}

void Flight::error(const api::ApiError& error) {
  end([&](StreamEvents& s) {
    if (s.on_error) s.on_error(error);
  });
}

void Flight::end(const std::function<void(StreamEvents&)>& deliver) {
  std::lock_guard lock(mutex_);
  if (ended_) return;
  ended_ = true;
  for (auto& [id, s] : subscribers_) deliver(s);
  subscribers_.clear();
  log_.clear();
  job_.reset();
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
  if (auto f = flight_.lock()) f->leave(id_);
}

}  // namespace writeup::service

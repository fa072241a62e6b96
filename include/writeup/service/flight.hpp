#pragma once
// Single flight: one generation that every identical request in this process shares. The
// first request starts it; a request that arrives while it runs joins it, gets the text
// produced so far at once and every later event, and the same completed texts.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/engine/job.hpp"
#include "writeup/generate/generation.hpp"

namespace writeup::service {

// What a started generation reports. Callbacks run on the worker's or the cache's thread,
// under the flight's lock: they must only hand the event to their own strand and return.
struct StreamEvents {
  // New releasable text of sequence `index` (never splits a UTF-8 character or shows part of
  // a stop string); `tokens` is the sequence's token count so far.
  std::function<void(int index, const std::string& delta, int tokens)> on_text;
  std::function<void(const std::vector<generate::GeneratedSequence>&)> on_done;
  std::function<void(const api::ApiError&)> on_error;
};

class Flight {
 public:
  // `on_abandoned` runs (outside the lock) when the last subscriber left before the end.
  explicit Flight(std::function<void()> on_abandoned);

  // Adds a subscriber and replays the text so far to it. Returns 0 (and adds nothing) when the
  // flight already ended or was abandoned: the caller starts a new one.
  std::uint64_t join(StreamEvents events);
  // Removes a subscriber; when none remain before the end, cancels the job (if any) and
  // marks the flight abandoned.
  void leave(std::uint64_t id);
  // The engine job once one runs (cancelled at once when the flight was abandoned meanwhile).
  // Not kept once the flight ended: the job's callbacks hold the flight, so keeping it would
  // make a cycle that nothing breaks any more.
  void set_job(std::shared_ptr<engine::Job> job);

  // Events, fanned out to every subscriber. done() and error() end the flight.
  void text(int index, const std::string& delta, int tokens);
  void done(const std::vector<generate::GeneratedSequence>& results);
  void error(const api::ApiError& error);

  bool abandoned() const;
  bool finished() const;  // ended or abandoned: no one can join any more
  std::size_t subscribers() const;

 private:
  void end(const std::function<void(StreamEvents&)>& deliver);  // the last event, to everyone

  struct TextEvent {
    int index;
    std::string delta;
    int tokens;
  };
  mutable std::mutex mutex_;
  std::map<std::uint64_t, StreamEvents> subscribers_;
  std::vector<TextEvent> log_;
  std::shared_ptr<engine::Job> job_;
  std::uint64_t next_id_ = 0;
  bool ended_ = false;
  bool abandoned_ = false;
  std::function<void()> on_abandoned_;
};

// A client's handle on a generation: cancel() leaves it (the generation itself stops when
// its last client left). Safe to call from any thread, more than once.
class Subscription {
 public:
  Subscription(std::weak_ptr<Flight> flight, std::uint64_t id) : flight_(std::move(flight)), id_(id) {}
  void cancel();

 private:
  std::weak_ptr<Flight> flight_;
  std::uint64_t id_;
};

}  // namespace writeup::service

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

#include "writeup/engine/job.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/service/service_error.hpp"

namespace writeup::service {

// Newly released text of sequence `index` (never part of a UTF-8 character or of a possible
// stop string); `tokens` is the sequence's token count so far.
struct TextDelta {
  int index = 0;
  std::string text;
  int tokens = 0;
  // Only when the request asked for logprobs (OutputOptions::logprobs): the tokens whose text
  // this delta completes (a token is reported with the delta that carries its text's end), and
  // on a sequence's first delta the prompt's logprobs (GenerationRequest::prompt_logprobs).
  std::vector<generate::TokenLogprob> logprobs;
  std::vector<generate::TokenLogprob> prompt_logprobs;
};

// What a started generation reports. Callbacks run on the output processor's executor or the
// cache's thread, outside the flight's lock, one event at a time: they must only hand the event
// to their own strand and return. A subscriber that refers to a session holds it weakly and
// drops the event when the session is gone.
struct StreamEvents {
  // One release: the new text of one or more sequences.
  std::function<void(const std::vector<TextDelta>& deltas)> on_text;
  std::function<void(const std::vector<generate::GeneratedSequence>&)> on_done;
  std::function<void(const ServiceError&)> on_error;
  // The request got its place: a worker's queue accepted the generation (or, for a joiner, the
  // flight it joined had). A stored response's on_done comes without it; text may come first.
  std::function<void()> on_admitted;
};

class Flight {
 public:
  // `on_abandoned` runs (outside the lock) when the last subscriber left before the end.
  explicit Flight(std::function<void()> on_abandoned);

  // Adds a subscriber and replays the text so far to it (as one release). Returns 0 (and adds
  // nothing) when the flight already ended or was abandoned: the caller starts a new one. Not
  // from inside one of this flight's events.
  std::uint64_t join(StreamEvents events);
  // Removes a subscriber; when none remain before the end, cancels the job (if any) and
  // marks the flight abandoned.
  void leave(std::uint64_t id);
  // The engine job once one runs (cancelled at once when the flight was abandoned meanwhile).
  // Not kept once the flight ended: the job holds its output processor, which holds the
  // flight, so keeping it would make a cycle that nothing breaks any more.
  void set_job(std::shared_ptr<engine::Job> job);

  // Events (from one producer at a time: the output processor, or the cache for a stored
  // response), fanned out to every subscriber. done() and error() end the flight.
  void admit();  // the engine queued the job: on_admitted to every subscriber (and later joiners)
  void text(const std::vector<TextDelta>& deltas);
  void done(const std::vector<generate::GeneratedSequence>& results);
  void error(const ServiceError& error);

  bool abandoned() const;
  bool finished() const;  // ended or abandoned: no one can join any more
  std::size_t subscribers() const;

 private:
  // The subscribers to deliver the last event to, taken under the lock; ends the flight and
  // hands its job to `dropped`.
  std::vector<StreamEvents> snapshot(bool last, std::shared_ptr<engine::Job>& dropped);

  // Deliveries (and a joiner's replay) are serialised by deliver_mutex_, so a joiner gets the
  // text so far before any later event; the state below is guarded by mutex_, which is never
  // held while a subscriber runs.
  std::mutex deliver_mutex_;
  mutable std::mutex mutex_;
  std::map<std::uint64_t, StreamEvents> subscribers_;
  std::vector<TextDelta> log_;  // per sequence: all text so far (index = sequence)
  std::shared_ptr<engine::Job> job_;
  std::uint64_t next_id_ = 0;
  bool ended_ = false;
  bool abandoned_ = false;
  bool admitted_ = false;
  std::function<void()> on_abandoned_;
};

// A client's handle on a generation: cancel() leaves it (the generation itself stops when
// its last client left). Safe to call from any thread, more than once.
class Subscription {
 public:
  Subscription(std::weak_ptr<Flight> flight, std::uint64_t id) : flight_(std::move(flight)), id_(id) {}
  // Several generations as one (a request with several prompts): cancel() leaves them all.
  explicit Subscription(std::vector<std::shared_ptr<Subscription>> parts) : id_(0), parts_(std::move(parts)) {}
  void cancel();

 private:
  std::weak_ptr<Flight> flight_;
  std::uint64_t id_;
  std::vector<std::shared_ptr<Subscription>> parts_;
};

}  // namespace writeup::service

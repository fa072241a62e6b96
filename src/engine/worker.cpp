#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "writeup/engine/device_failure.hpp"
#include "writeup/engine/step_executor.hpp"
#include "writeup/model/device.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::engine {

// What submit(), stop() and the jobs' wakers share with the worker's thread. The jobs hold it
// weakly: a job that outlives its worker wakes nothing.
struct Worker::Shared {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Job>> inbox;
  int waiting = 0;  // jobs in the scheduler's queue (an upper bound between two steps)
  bool poked = false;
  bool stopping = false;
};

namespace {

// MemAvailable from /proc/meminfo (bytes); 0 when unknown.
std::size_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  while (meminfo >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

void deliver_error(const std::string& model, Job& job, ErrorKind kind, const std::string& message) {
  if (!job.sink) return;
  try {
    job.sink->on_error(kind, message);
  } catch (const std::exception& e) {
    log::error("model " + model + ": a job's sink threw on its error: " + e.what());
  }
}

}  // namespace

Worker::Worker(WorkerOptions options, std::shared_ptr<const text::BpeTokenizer> tokenizer)
    : options_(std::move(options)), tokenizer_(std::move(tokenizer)), shared_(std::make_shared<Shared>()) {
  thread_ = std::thread([this] { run(); });
}

Worker::~Worker() { stop(); }

bool Worker::submit(std::shared_ptr<Job> job) {
  job->set_waker([weak = std::weak_ptr<Shared>(shared_)] {
    if (const auto s = weak.lock()) {
      {
        std::lock_guard lock(s->mutex);
        s->poked = true;
      }
      s->wake.notify_one();
    }
  });
  {
    std::lock_guard lock(shared_->mutex);
    if (shared_->stopping ||
        static_cast<int>(shared_->inbox.size()) + shared_->waiting >= options_.max_queue) {
      return false;
    }
    shared_->inbox.push_back(std::move(job));
  }
  shared_->wake.notify_one();
  return true;
}

void Worker::stop() {
  {
    std::lock_guard lock(shared_->mutex);
    shared_->stopping = true;
  }
  shared_->wake.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Worker::stopping() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->stopping;
}

std::size_t Worker::queue_depth() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->inbox.size() + static_cast<std::size_t>(shared_->waiting);
}

std::shared_ptr<const model::GPT2Model> Worker::model() const {
  std::lock_guard lock(shared_->mutex);
  return model_;
}

std::string Worker::fingerprint() const {
  const auto m = model();
  return m ? m->fingerprint() : std::string();
}

model::DeviceMemory Worker::device_memory() const {
  const auto m = model();
  return m ? model::device_memory(m->device()) : model::DeviceMemory{};
}

void Worker::load() {
  const auto t0 = Job::Clock::now();
  try {
    if (const char* fraction = std::getenv("WRITEUP_CUDA_MEMORY_FRACTION")) {
      // For the GPU check: a small allocator cap provokes a real out-of-memory error.
      model::set_device_memory_fraction(c10::Device(options_.load.device), std::stod(fraction));
      log::warn("model " + options_.model_name + ": device memory capped at " + fraction +
                " by WRITEUP_CUDA_MEMORY_FRACTION");
    }
    std::shared_ptr<const model::GPT2Model> m =
        options_.weights ? options_.weights() : model::GPT2Model::load(options_.path, options_.load);
    if (!m) throw std::runtime_error("no weights");
    std::lock_guard lock(shared_->mutex);
    model_ = std::move(m);
  } catch (const std::exception& e) {
    load_error_ = describe(e);
    log::error("model " + options_.model_name + " failed to load: " + load_error_);
  }
  load_seconds_ = std::chrono::duration<double>(Job::Clock::now() - t0).count();
  if (model_) {
    std::string kernels;  // the packed CPU path's weight format and the kernels this CPU runs
    if (model_->device().is_cpu() && model_->batch_invariant()) {
      const auto format = model_->weight_format();
      kernels = std::string(", ") + model::to_string(format) + " weights, " + model::PackedLinear::kernel_name(format) +
                " kernels";
    }
    log::info("model " + options_.model_name + " loaded" + (options_.weights ? "" : " from " + options_.path) +
              " in " + std::to_string(load_seconds_.load()) + " s" + kernels);
  }
}

// The worker's thread: its scheduler and executor, the jobs it knows, delivery to their sinks.
class Worker::Loop {
 public:
  Loop(Worker& w) : w_(w) {}

  void setup() {
    const auto& m = *w_.model_;
    const int vocab = sampled_vocab(m, *w_.tokenizer_);
    auto so = w_.options_.scheduler;
    so.max_queue = std::numeric_limits<int>::max();  // submit() bounds the queue
    std::size_t budget = so.kv_budget_bytes;
    if (budget == 0 && m.device().is_cpu()) budget = available_memory_bytes() / 4;
    so.slots = slots_within_budget(so.slots, so.min_slots, budget, kv_slot_bytes(m), m.config().n_positions);
    ExecutorHooks hooks{w_.options_.tokens_total, w_.options_.oom_total, w_.options_.first_token_seconds,
                        w_.options_.token_seconds, w_.options_.before_forward};
    executor = std::make_unique<StepExecutor>(w_.model_, so.slots, so.prefill_chunk, vocab, std::move(hooks));
    scheduler = std::make_unique<Scheduler>(so, ModelLimits{m.config().n_positions, vocab, m.config().eos_token_id});
    if (m.config().vocab_size > vocab) {
      log::info("model " + w_.options_.model_name + ": vocabulary padded to " + std::to_string(m.config().vocab_size) +
                " rows; only the tokenizer's " + std::to_string(vocab) + " ids are sampled");
    }
  }

  void admit(std::vector<std::shared_ptr<Job>>& incoming) {
    for (auto& job : incoming) {
      const RequestId id = next_id_++;
      if (!scheduler->add(id, job->request, job->deadline)) {  // not reached: submit() bounds the queue
        deliver_error(w_.options_.model_name, *job, ErrorKind::internal, "the queue is full");
        continue;
      }
      jobs_.emplace(id, Known{std::move(job), 0});
      if (!scheduler->known(id)) continue;  // it can never run: its error is in the notices
      const auto& request = jobs_.at(id).job->request;
      try {
        executor->add(id, request, jobs_.at(id).job->submitted);
      } catch (const std::invalid_argument& e) {  // the sampling parameters
        scheduler->fail(id, ErrorKind::invalid, e.what());
      } catch (const std::exception& e) {
        log::error("model " + w_.options_.model_name + ": a job could not be set up: " + e.what());
        scheduler->fail(id, ErrorKind::internal, "the request could not be set up");
      }
    }
  }

  // The flags set on the jobs from other threads since the last step.
  void poll() {
    for (auto& [id, k] : jobs_) {
      if (k.job->cancelled()) {
        scheduler->cancel(id);
        continue;
      }
      const std::uint64_t fresh = k.job->stops() & ~k.stops;
      if (!fresh) continue;
      k.stops |= fresh;
      for (int i = 0; i < 64; ++i) {
        if ((fresh >> i) & 1u) scheduler->stop(id, i);
      }
    }
  }

  // Hands the notices to the sinks; a sink that throws fails its job (only).
  void deliver() {
    for (int round = 0; round < 3; ++round) {
      auto notices = scheduler->take_notices();
      if (notices.empty()) return;
      for (auto& n : notices) {
        const auto it = jobs_.find(n.request);
        if (it == jobs_.end()) continue;
        auto job = it->second.job;
        if (n.ended) {
          jobs_.erase(it);
          executor->remove(n.request);
        }
        if (!job->sink) continue;
        if (n.has_prompt_logprobs || !n.outputs.empty()) {
          try {
            if (n.has_prompt_logprobs) job->sink->on_prompt_logprobs(std::move(n.prompt_logprobs));
            if (!n.outputs.empty()) job->sink->on_outputs(n.outputs);
          } catch (const std::exception& e) {
            log::error("model " + w_.options_.model_name + ": a job's sink threw: " + e.what());
            if (!n.ended) scheduler->fail(n.request, ErrorKind::internal, "the model failed on this request");
          }
        }
        if (n.failed) deliver_error(w_.options_.model_name, *job, n.error, n.message);
      }
    }
  }

  void fail_everything(ErrorKind kind, const std::string& message) {
    scheduler->fail_all(kind, message);
    deliver();
  }

  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<StepExecutor> executor;

 private:
  struct Known {
    std::shared_ptr<Job> job;
    std::uint64_t stops = 0;  // the stop flags already passed on
  };
  Worker& w_;
  RequestId next_id_ = 1;
  std::unordered_map<RequestId, Known> jobs_;
};

void Worker::run() {
  load();
  Loop loop(*this);
  if (model_) {
    try {
      loop.setup();
      slots_ = loop.scheduler->slots();
      kv_cache_bytes_ = static_cast<double>(loop.executor->kv_cache_bytes());
      log::info("model " + options_.model_name + ": " + std::to_string(slots_.load()) + " KV-cache slots, " +
                std::to_string(loop.executor->kv_cache_bytes() >> 20) + " MiB");
      loaded_ = true;  // weights and KV cache in place: ready to serve
    } catch (const std::exception& e) {
      load_error_ = describe(e);
      log::error("model " + options_.model_name + ": " + load_error_);
      loop.scheduler.reset();
      loop.executor.reset();
    }
  }
  load_ended_ = true;
  auto& s = *shared_;
  long failed_probes = 0;  // since the device failed
  bool progressed = false;  // the last plan had work: the next may too
  for (;;) {
    std::vector<std::shared_ptr<Job>> incoming;
    {
      std::unique_lock lock(s.mutex);
      const auto has_work = [&] {
        return s.stopping || !s.inbox.empty() || s.poked || (loop.scheduler && progressed && !loop.scheduler->idle());
      };
      if (loop.scheduler && device_error_) {
        // Nothing may come to run a step: find out on our own when the device works again.
        if (!s.wake.wait_for(lock, options_.probe_interval, has_work)) {
          lock.unlock();
          try {
            loop.executor->probe(loop.scheduler->probe_slot());
            device_error_ = false;
            failed_probes = 0;
            log::warn("model " + options_.model_name + ": the device works again: the worker is ready");
          } catch (const std::exception& e) {
            // Logged on the 1st, 2nd, 4th, 8th... failure: a broken device does not flood the log.
            ++failed_probes;
            if ((failed_probes & (failed_probes - 1)) == 0) {
              log::error("model " + options_.model_name + ": the device still fails (" +
                         std::to_string(failed_probes) + " probe(s)): " + describe(e));
            }
          }
          continue;
        }
      } else {
        s.wake.wait(lock, has_work);
      }
      if (s.stopping) break;
      incoming.assign(std::make_move_iterator(s.inbox.begin()), std::make_move_iterator(s.inbox.end()));
      s.inbox.clear();
      s.waiting += static_cast<int>(incoming.size());
      s.poked = false;
    }
    if (!loop.scheduler) {
      for (auto& job : incoming) {
        deliver_error(options_.model_name, *job, ErrorKind::unavailable,
                      "model " + options_.model_name + " is not loaded: " + load_error_);
      }
      std::lock_guard lock(s.mutex);
      s.waiting = 0;
      continue;
    }
    loop.admit(incoming);
    loop.poll();
    const auto plan = loop.scheduler->plan(Scheduler::Clock::now());
    running_ = loop.scheduler->running_sequences();
    {
      std::lock_guard lock(s.mutex);
      s.waiting = loop.scheduler->waiting();
    }
    loop.deliver();  // what ended before the step: invalid, cancelled, timed out
    progressed = !plan.empty();
    try {
      loop.executor->execute(*loop.scheduler, plan);
      if (!plan.rows.empty()) device_error_ = false;
    } catch (const std::exception& e) {
      if (is_device_failure(e)) {
        // The device is broken, not a request: out of rotation (/ready) until a step or a
        // probe succeeds again.
        device_error_ = true;
        log::error("model " + options_.model_name + ": device error: " + describe(e));
        loop.scheduler->fail_running(ErrorKind::internal, "the model's device failed");
      } else {
        // Not confined to one request by the executor (a bug outside the forward pass): end
        // what runs, keep serving.
        log::error("model " + options_.model_name + ": a step failed: " + describe(e));
        loop.scheduler->fail_running(ErrorKind::internal, "the model failed on this request");
      }
    }
    loop.deliver();
    running_ = loop.scheduler->running_sequences();
    std::lock_guard lock(s.mutex);
    s.waiting = loop.scheduler->waiting();
  }
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(s.mutex);
    dropped.swap(s.inbox);
    s.waiting = 0;
  }
  for (auto& job : dropped) deliver_error(options_.model_name, *job, ErrorKind::shutdown, "the server is stopping");
  if (loop.scheduler) loop.fail_everything(ErrorKind::shutdown, "the server is stopping");
  running_ = 0;
}

}  // namespace writeup::engine

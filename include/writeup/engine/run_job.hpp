#pragma once
// One request on a Worker, for tools (writeup-generate, writeup-bench, the GPU check): submit
// a job and wait for its end on the calling thread.
#include <memory>

#include "writeup/engine/job.hpp"

namespace writeup::engine {

class Worker;

// Submits `job` and blocks until it ends (every sequence finished, or its error). Its outputs
// still go to `job->sink` (which may be null) as they come, on the worker's thread. Returns
// false, without waiting, when the worker refused the job (queue full, stopping).
bool run_job(Worker& worker, std::shared_ptr<Job> job);

}  // namespace writeup::engine

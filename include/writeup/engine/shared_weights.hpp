#pragma once
// No ATen here: the service includes this header.
#include <functional>
#include <memory>
#include <string>

#include "writeup/model/load_options.hpp"

namespace writeup::model {
class GPT2Model;
}

namespace writeup::engine {

// One copy of a model's weights per device, shared by every worker that serves it (set as
// WorkerOptions::weights). The first worker to call it loads the weights on its own thread;
// the others wait for that load and share its result, or get its error.
std::function<std::shared_ptr<const model::GPT2Model>()> shared_weights(std::string path, model::LoadOptions options);

}  // namespace writeup::engine

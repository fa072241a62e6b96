#include "writeup/engine/shared_weights.hpp"

#include <exception>
#include <mutex>

#include "writeup/model/gpt2_model.hpp"

namespace writeup::engine {
namespace {

struct Load {
  std::once_flag once;
  std::shared_ptr<const model::GPT2Model> model;
  std::exception_ptr error;
};

}  // namespace

std::function<std::shared_ptr<const model::GPT2Model>()> shared_weights(std::string path, model::LoadOptions options) {
  auto load = std::make_shared<Load>();
  return [load, path = std::move(path), options = std::move(options)] {
    // call_once blocks the other callers until the first call returns; the error is kept
    // rather than thrown through call_once, so that it is shared instead of retried.
    std::call_once(load->once, [&] {
      try {
        load->model = model::GPT2Model::load(path, options);
      } catch (...) {
        load->error = std::current_exception();
      }
    });
    if (load->error) std::rethrow_exception(load->error);
    return load->model;
  };
}

}  // namespace writeup::engine

#pragma once
#include <stdexcept>
#include <string>

namespace writeup::model {

// A model file or directory that cannot be used (missing, malformed, wrong shapes).
// The message names the file and, where there is one, the tensor or key.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace writeup::model

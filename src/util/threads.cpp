#include "writeup/util/threads.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <thread>

namespace writeup {

const char* configure_threads(int intra_op_threads) {
  const char* blas = "unknown";
  // libtorch links libblas.so.3; Debian's alternatives point it at OpenBLAS when installed.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(1);
    blas = "openblas";
  }
  if (intra_op_threads <= 0) {
    intra_op_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  at::set_num_threads(intra_op_threads);
  return blas;
}

}  // namespace writeup

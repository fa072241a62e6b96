#pragma once

namespace writeup {

// Pins the BLAS library (OpenBLAS when it is the system libblas) to one thread so that it
// never competes with the engine's own threads, and sets libtorch's intra-op thread count.
// `intra_op_threads` <= 0 means "one per hardware core". Returns the BLAS name it pinned
// ("openblas", or "unknown" when no OpenBLAS symbol is present).
const char* configure_threads(int intra_op_threads);

}  // namespace writeup

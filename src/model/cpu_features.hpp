#pragma once
// Which instruction sets the CPU kernels use now (internal to src/model): what the CPU has,
// probed once with __builtin_cpu_supports, less what PackedLinear::force_kernel excludes.
// Every kernel gives the generic kernel's bits, so this choice changes speed only.
#include "writeup/model/packed_linear.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's avx512fintrin.h self-initialises its "undefined" operands (GCC bug 105593), which
// -Wmaybe-uninitialized / -Wuninitialized report wherever the AVX-512 intrinsics inline.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

namespace writeup::model::detail {

bool use_avx512();       // AVX-512 F + BW: the packed kernels, int8's quantiser, the fused ops
bool use_avx512_vnni();  // int8's vpdpwssd (else vpmaddwd + add), with use_avx512()
bool use_avx2();         // AVX2 + FMA: the fallback kernels and decode attention

}  // namespace writeup::model::detail

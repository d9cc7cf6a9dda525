// Shapes shared by the native normalisation kernels (layernorm_cpu.cc, batchnorm_cpu.cc): float32
// buffers of any rank viewed as (rows, C), C the last axis, and the fixed row chunking of their sums.
#ifndef DOG_JAX_OPS_NATIVE_NORM_SHAPES_H_
#define DOG_JAX_OPS_NATIVE_NORM_SHAPES_H_

#include <cstddef>
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace dog_jax_native {

using Array = xla::ffi::Buffer<xla::ffi::F32>;  // any rank

// Rows per partial sum (dscale/dbias, BatchNorm statistics): about this many elements per chunk,
// fixed by the shape alone so that results do not depend on the thread count.
constexpr int64_t kChunkElements = 1 << 15;

// Product of all dimensions but the last (1 for a vector).
inline int64_t LeadingSize(xla::ffi::Span<const int64_t> dims) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) n *= dims[i];
  return n;
}

inline int64_t LastDim(xla::ffi::Span<const int64_t> dims) {
  return dims.size() == 0 ? 1 : dims[dims.size() - 1];
}

}  // namespace dog_jax_native

#endif  // DOG_JAX_OPS_NATIVE_NORM_SHAPES_H_

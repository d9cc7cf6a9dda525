// Shared helpers of dog_jax's native CPU kernels (depthwise_cpu.cc, layernorm_cpu.cc,
// batchnorm_cpu.cc): instruction-set clones, GCC vector types and the split of work over XLA's
// intra-op thread pool.
#ifndef DOG_JAX_OPS_NATIVE_PARALLEL_H_
#define DOG_JAX_OPS_NATIVE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

// Hot loops are compiled once per instruction set and picked at load time (x86-64-v4: AVX-512,
// v3: AVX2 + FMA); the library itself is built with plain -O3, no -march=native.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DOG_JAX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DOG_JAX_CLONES
#endif
// Inlined into the cloned callers, so that the inner code is compiled once per instruction set.
#define DOG_JAX_INLINE inline __attribute__((always_inline))

namespace dog_jax_native {

namespace ffi = xla::ffi;

// CB consecutive floats as one GCC vector value: the compiler maps it onto whatever registers the
// clone's instruction set has (1 zmm, 2 ymm or 4 xmm for CB = 16) and keeps several of them in
// registers, which it did not do for plain float arrays.
template <int CB>
struct VecOf {
  typedef float type __attribute__((vector_size(CB * sizeof(float))));
};
template <int CB>
using Vec = typename VecOf<CB>::type;

template <int CB>
DOG_JAX_INLINE Vec<CB> Load(const float* p) {
  Vec<CB> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int CB>
DOG_JAX_INLINE void Store(float* p, Vec<CB> v) {
  std::memcpy(p, &v, sizeof(v));
}

// Runs body(chunk) for chunk in [0, num_chunks) on the calling thread and up to
// pool.num_threads() pool threads. Chunks are claimed from a shared counter, so a pool task that
// starts late (its thread busy elsewhere) finds nothing left and returns; the caller waits only
// for chunks that were claimed, never for a task to start.
inline void ParallelFor(ffi::ThreadPool& pool, int64_t num_chunks,
                        const std::function<void(int64_t)>& body) {
  if (num_chunks <= 0) return;
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto state = std::make_shared<State>();
  const std::function<void(int64_t)>* body_ptr = &body;
  auto work = [state, body_ptr, num_chunks]() {
    int64_t finished = 0;
    for (int64_t k; (k = state->next.fetch_add(1)) < num_chunks;) {
      (*body_ptr)(k);
      ++finished;
    }
    if (finished > 0) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->done += finished;
      if (state->done == num_chunks) state->cv.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), num_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work(); });
  work();
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == num_chunks; });
}

// A few chunks per thread for balance; at least one unit each.
inline int64_t NumChunks(int64_t units, ffi::ThreadPool& pool) {
  return std::max<int64_t>(1, std::min<int64_t>(units, 4 * (pool.num_threads() + 1)));
}

}  // namespace dog_jax_native

#endif  // DOG_JAX_OPS_NATIVE_PARALLEL_H_

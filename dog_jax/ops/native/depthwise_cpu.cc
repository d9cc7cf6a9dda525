// Native CPU depthwise 2-D convolution for dog_jax, called from JAX through the XLA FFI.
//
// Layouts (float32, row-major): x (N, H, W, C), kernel (KH, KW, C), output (N, Ho, Wo, C).
// Stride 1; the padding is given by the number of implicit zero rows/columns before the input
// (pad_top, pad_left, may be negative: the input gradient is this same correlation with the
// flipped kernel and pads KH-1-pad_top, KW-1-pad_left); the output size comes from the result
// buffer, so any bottom/right padding is implied.
//
//   DogJaxDepthwiseForward:     y[n,i,j,c]  = sum_{a,b} x[n, i-pt+a, j-pl+b, c] * w[a,b,c]
//   DogJaxDepthwiseKernelGrad:  dw[a,b,c]  = sum_{n,i,j} x[n, i-pt+a, j-pl+b, c] * dy[n,i,j,c]
//
// Why a hand-written loop: XLA:CPU emits each tap of the shifted form as separate loads of input
// and weight; here a tile of JB output columns x CB channels stays in registers over all taps and
// each weight vector is loaded once per tile. Channels are the contiguous axis, so the inner loops
// are over a fixed CB channels (compiler-vectorised). Work is split over XLA's intra-op thread pool:
// output rows (forward) or images (kernel gradient, one partial sum per chunk of images).
// Compiled with plain -O3 (portable: no -march=native); hot loops are cloned for AVX2/AVX-512
// with GCC's target_clones and picked at load time
// (x86-64-v4: AVX-512, v3: AVX2 + FMA).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel.h"

namespace {

using dog_jax_native::Load;
using dog_jax_native::NumChunks;
using dog_jax_native::ParallelFor;
using dog_jax_native::Store;
using dog_jax_native::Vec;
namespace ffi = xla::ffi;

struct Geometry {
  int64_t n, h, w, c, kh, kw, ho, wo, pt, pl;
};

// Buffer types (aliases: the handler macros below cannot take template arguments with commas).
using Image = ffi::Buffer<ffi::F32, 4>;
using Taps = ffi::Buffer<ffi::F32, 3>;

constexpr int kJB = 8;  // output columns per register tile (forward)

// Forward for output rows [row_begin, row_end) of the flattened (N*Ho) rows and channels
// [c0, c0 + CB). CB is a compile-time width so the channel loops vectorise.
template <int CB>
DOG_JAX_INLINE void ForwardBlock(const float* x, const float* w, float* y, const Geometry& g, int64_t row,
                         int64_t c0) {
  const int64_t n = row / g.ho, i = row % g.ho;
  float* yrow = y + (row * g.wo) * g.c + c0;
  // Output columns whose kw taps all fall inside the input: no per-tap bounds checks.
  const int64_t j_lo = std::min(g.wo, std::max<int64_t>(0, g.pl));
  const int64_t j_hi = std::max(j_lo, std::min(g.wo, g.w + g.pl - g.kw + 1));
  auto one_column = [&](int64_t j) {
    Vec<CB> acc = {};
    for (int64_t a = 0; a < g.kh; ++a) {
      const int64_t r = i - g.pt + a;
      if (r < 0 || r >= g.h) continue;
      const float* xr = x + ((n * g.h + r) * g.w) * g.c + c0;
      const float* wa = w + (a * g.kw) * g.c + c0;
      for (int64_t b = 0; b < g.kw; ++b) {
        const int64_t col = j - g.pl + b;
        if (col < 0 || col >= g.w) continue;
        acc += Load<CB>(xr + col * g.c) * Load<CB>(wa + b * g.c);
      }
    }
    Store<CB>(yrow + j * g.c, acc);
  };
  for (int64_t j = 0; j < j_lo; ++j) one_column(j);
  int64_t j = j_lo;
  for (; j + kJB <= j_hi; j += kJB) {
    Vec<CB> acc[kJB] = {};
    for (int64_t a = 0; a < g.kh; ++a) {
      const int64_t r = i - g.pt + a;
      if (r < 0 || r >= g.h) continue;
      const float* xr = x + ((n * g.h + r) * g.w + (j - g.pl)) * g.c + c0;
      const float* wa = w + (a * g.kw) * g.c + c0;
      for (int64_t b = 0; b < g.kw; ++b) {
        const Vec<CB> wv = Load<CB>(wa + b * g.c);
#pragma GCC unroll 16
        for (int jj = 0; jj < kJB; ++jj) acc[jj] += Load<CB>(xr + (jj + b) * g.c) * wv;
      }
    }
#pragma GCC unroll 16
    for (int jj = 0; jj < kJB; ++jj) Store<CB>(yrow + (j + jj) * g.c, acc[jj]);
  }
  for (; j < g.wo; ++j) one_column(j);
}

DOG_JAX_CLONES void ForwardRows(const float* x, const float* w, float* y, const Geometry& g,
                                int64_t row_begin, int64_t row_end) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    int64_t c0 = 0;
    for (; c0 + 16 <= g.c; c0 += 16) ForwardBlock<16>(x, w, y, g, row, c0);
    for (; c0 + 8 <= g.c; c0 += 8) ForwardBlock<8>(x, w, y, g, row, c0);
    for (; c0 < g.c; ++c0) ForwardBlock<1>(x, w, y, g, row, c0);
  }
}

// Kernel-gradient contribution of image n, output row i, channels [c0, c0 + CB), added into acc
// (KH, KW, C). KW > 0: the kernel width is a compile-time constant and the KW sums of one kernel row
// stay in registers while the loop walks the output columns (each output-gradient vector is loaded
// once, the KW input vectors it meets are neighbours, so they stay in L1 even when a pixel is 2 KB).
// KW == 0: any width, one (row, tap) sum at a time over the columns, four independent partial sums.
template <int CB, int KW>
DOG_JAX_INLINE void KernelGradBlock(const float* x, const float* dy, float* acc, const Geometry& g,
                                    int64_t n, int64_t i, int64_t c0) {
  const float* dyrow = dy + ((n * g.ho + i) * g.wo) * g.c + c0;
  for (int64_t a = 0; a < g.kh; ++a) {
    const int64_t r = i - g.pt + a;
    if (r < 0 || r >= g.h) continue;
    const float* xr = x + ((n * g.h + r) * g.w) * g.c + c0;
    float* arow = acc + (a * g.kw) * g.c + c0;
    if constexpr (KW > 0) {
      Vec<CB> s[KW] = {};
      // Columns whose KW taps all fall inside the input row; the others check each tap.
      const int64_t j_lo = std::min(g.wo, std::max<int64_t>(0, g.pl));
      const int64_t j_hi = std::max(j_lo, std::min(g.wo, g.w + g.pl - KW + 1));
      auto edge_column = [&](int64_t j) {
        const Vec<CB> d = Load<CB>(dyrow + j * g.c);
#pragma GCC unroll 16
        for (int b = 0; b < KW; ++b) {
          const int64_t col = j - g.pl + b;
          if (col >= 0 && col < g.w) s[b] += Load<CB>(xr + col * g.c) * d;
        }
      };
      for (int64_t j = 0; j < j_lo; ++j) edge_column(j);
      for (int64_t j = j_lo; j < j_hi; ++j) {
        const Vec<CB> d = Load<CB>(dyrow + j * g.c);
        const float* xp = xr + (j - g.pl) * g.c;
#pragma GCC unroll 16
        for (int b = 0; b < KW; ++b) s[b] += Load<CB>(xp + b * g.c) * d;
      }
      for (int64_t j = j_hi; j < g.wo; ++j) edge_column(j);
#pragma GCC unroll 16
      for (int b = 0; b < KW; ++b) Store<CB>(arow + b * g.c, Load<CB>(arow + b * g.c) + s[b]);
    } else {
      for (int64_t b = 0; b < g.kw; ++b) {
        // Output columns j with input column j - pl + b inside [0, W).
        const int64_t j_lo = std::max<int64_t>(0, g.pl - b);
        const int64_t j_hi = std::min(g.wo, g.w + g.pl - b);
        Vec<CB> s0 = {}, s1 = {}, s2 = {}, s3 = {};
        const float* xb = xr + (b - g.pl) * g.c;
        int64_t j = j_lo;
        for (; j + 4 <= j_hi; j += 4) {
          s0 += Load<CB>(xb + j * g.c) * Load<CB>(dyrow + j * g.c);
          s1 += Load<CB>(xb + (j + 1) * g.c) * Load<CB>(dyrow + (j + 1) * g.c);
          s2 += Load<CB>(xb + (j + 2) * g.c) * Load<CB>(dyrow + (j + 2) * g.c);
          s3 += Load<CB>(xb + (j + 3) * g.c) * Load<CB>(dyrow + (j + 3) * g.c);
        }
        for (; j < j_hi; ++j) s0 += Load<CB>(xb + j * g.c) * Load<CB>(dyrow + j * g.c);
        float* ap = arow + b * g.c;
        Store<CB>(ap, Load<CB>(ap) + ((s0 + s1) + (s2 + s3)));
      }
    }
  }
}

template <int KW>
DOG_JAX_INLINE void KernelGradRow(const float* x, const float* dy, float* acc, const Geometry& g,
                                  int64_t n, int64_t i) {
  int64_t c0 = 0;
  for (; c0 + 16 <= g.c; c0 += 16) KernelGradBlock<16, KW>(x, dy, acc, g, n, i, c0);
  for (; c0 + 8 <= g.c; c0 += 8) KernelGradBlock<8, KW>(x, dy, acc, g, n, i, c0);
  for (; c0 < g.c; ++c0) KernelGradBlock<1, KW>(x, dy, acc, g, n, i, c0);
}

// Adds the kernel gradient of images [n_begin, n_end) into acc (KH, KW, C). Row by row, all
// channels: the input rows and the output-gradient row in use stay in cache.
DOG_JAX_CLONES void KernelGradImages(const float* x, const float* dy, float* acc, const Geometry& g,
                                     int64_t n_begin, int64_t n_end) {
  for (int64_t n = n_begin; n < n_end; ++n) {
    for (int64_t i = 0; i < g.ho; ++i) {
      switch (g.kw) {  // the models' kernel widths get registers; others the generic loop
        case 3: KernelGradRow<3>(x, dy, acc, g, n, i); break;
        case 5: KernelGradRow<5>(x, dy, acc, g, n, i); break;
        case 7: KernelGradRow<7>(x, dy, acc, g, n, i); break;
        case 9: KernelGradRow<9>(x, dy, acc, g, n, i); break;
        default: KernelGradRow<0>(x, dy, acc, g, n, i);
      }
    }
  }
}

ffi::Error Forward(ffi::ThreadPool pool, Image x, Taps w, ffi::Result<Image> y, int64_t pad_top,
                   int64_t pad_left) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (wd[2] != xd[3] || yd[0] != xd[0] || yd[3] != xd[3])
    return ffi::Error::InvalidArgument("depthwise_cpu forward: inconsistent shapes");
  const Geometry g{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], yd[1], yd[2], pad_top, pad_left};
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  const int64_t rows = g.n * g.ho;
  const int64_t chunks = NumChunks(rows, pool);
  ParallelFor(pool, chunks, [&](int64_t k) {
    ForwardRows(xp, wp, yp, g, rows * k / chunks, rows * (k + 1) / chunks);
  });
  return ffi::Error::Success();
}

ffi::Error KernelGrad(ffi::ThreadPool pool, Image x, Image dy, ffi::Result<Taps> dw, int64_t pad_top,
                      int64_t pad_left) {
  auto xd = x.dimensions(), dd = dy.dimensions(), wd = dw->dimensions();
  if (dd[0] != xd[0] || dd[3] != xd[3] || wd[2] != xd[3])
    return ffi::Error::InvalidArgument("depthwise_cpu kernel gradient: inconsistent shapes");
  const Geometry g{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], dd[1], dd[2], pad_top, pad_left};
  const float* xp = x.typed_data();
  const float* dp = dy.typed_data();
  float* wp = dw->typed_data();
  // One partial sum per chunk of images (the chunk count depends only on the pool size, so the
  // result is deterministic), added up in chunk order at the end.
  const int64_t taps = g.kh * g.kw * g.c;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(g.n, pool.num_threads() + 1));
  std::vector<float> partial(static_cast<size_t>(chunks * taps), 0.0f);
  ParallelFor(pool, chunks, [&](int64_t k) {
    KernelGradImages(xp, dp, partial.data() + k * taps, g, g.n * k / chunks, g.n * (k + 1) / chunks);
  });
  std::copy(partial.begin(), partial.begin() + taps, wp);
  for (int64_t k = 1; k < chunks; ++k)
    for (int64_t t = 0; t < taps; ++t) wp[t] += partial[k * taps + t];
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxDepthwiseForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Image>()
                                  .Arg<Taps>()
                                  .Ret<Image>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxDepthwiseKernelGrad, KernelGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Image>()
                                  .Arg<Image>()
                                  .Ret<Taps>()
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

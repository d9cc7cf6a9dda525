// Native CPU LayerNorm (over the last axis) for dog_jax, called from JAX through the XLA FFI.
//
//
// x (float32, any rank) is viewed as (rows, C), C the last axis. scale and bias are (G, C): G = 1
// normally; under jax.vmap (vmap_method="broadcast_all") G is the batch size and the rows form G
// equal consecutive groups, group g using scale[g], bias[g] and reducing into dscale[g], dbias[g].
//
//   DogJaxLayerNormForward:   mean[r] = Σ_c x[r,c] / C
//                             rstd[r] = 1 / sqrt(Σ_c (x[r,c] − mean[r])² / C + eps)  (two-pass)
//                             y[r,c]  = (x[r,c] − mean[r]) · rstd[r] · scale[c] + bias[c]
//   DogJaxLayerNormBackward:  with x̂ = (x − mean)·rstd and g = dy·scale (per row),
//                             dx      = rstd · (g − mean_c(g) − x̂ · mean_c(g · x̂))
//                             dscale  = Σ_rows dy · x̂,   dbias = Σ_rows dy
//
// Why: XLA:CPU splits LayerNorm into several fused loops that each stream the whole tensor
// (≈12 ns/element for forward + backward at ConvNeXt-T's first stage); here one row (C ≤ a few
// thousand floats) stays in L1 over all its passes. Row sums use 16-lane vector accumulators.
// dscale/dbias: one partial sum per chunk of rows, the chunking fixed by the shape alone (not by
// the thread count or timing), added in chunk order, so results are bitwise reproducible.

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "norm_shapes.h"

namespace {

using dog_jax_native::Load;
using dog_jax_native::NumChunks;
using dog_jax_native::ParallelFor;
using dog_jax_native::Store;
using dog_jax_native::Vec;
using dog_jax_native::Array;
using dog_jax_native::kChunkElements;
using dog_jax_native::LastDim;
using dog_jax_native::LeadingSize;
namespace ffi = xla::ffi;

constexpr int kLanes = 16;

DOG_JAX_INLINE float HorizontalSum(Vec<kLanes> v) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Σ_c p[c]
DOG_JAX_INLINE float RowSum(const float* p, int64_t c) {
  Vec<kLanes> acc = {};
  int64_t i = 0;
  for (; i + kLanes <= c; i += kLanes) acc += Load<kLanes>(p + i);
  float s = HorizontalSum(acc);
  for (; i < c; ++i) s += p[i];
  return s;
}

// Σ_c (p[c] − m)²
DOG_JAX_INLINE float RowSquaredDeviation(const float* p, float m, int64_t c) {
  Vec<kLanes> acc = {};
  int64_t i = 0;
  for (; i + kLanes <= c; i += kLanes) {
    const Vec<kLanes> d = Load<kLanes>(p + i) - m;
    acc += d * d;
  }
  float s = HorizontalSum(acc);
  for (; i < c; ++i) s += (p[i] - m) * (p[i] - m);
  return s;
}

DOG_JAX_CLONES void ForwardRows(const float* x, const float* scale, const float* bias, float* y,
                                float* mean, float* rstd, int64_t c, int64_t rows_per_group,
                                float eps, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * c;
    const int64_t group = r / rows_per_group;
    const float* s = scale + group * c;
    const float* b = bias + group * c;
    float* yr = y + r * c;
    const float m = RowSum(xr, c) / static_cast<float>(c);
    const float var = RowSquaredDeviation(xr, m, c) / static_cast<float>(c);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - m) * inv * s[i] + b[i];
    mean[r] = m;
    rstd[r] = inv;
  }
}

// dx for rows [row_begin, row_end), all of one group; adds Σ dy·x̂ and Σ dy into dscale, dbias.
DOG_JAX_CLONES void BackwardRows(const float* x, const float* scale, const float* mean,
                                 const float* rstd, const float* dy, float* dx, float* dscale,
                                 float* dbias, int64_t c, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * c;
    const float* dyr = dy + r * c;
    float* dxr = dx + r * c;
    const float m = mean[r], inv = rstd[r];
    // Σ g and Σ g·x̂ with g = dy·scale, x̂ = (x − m)·inv.
    Vec<kLanes> acc_g = {}, acc_gx = {};
    int64_t i = 0;
    for (; i + kLanes <= c; i += kLanes) {
      const Vec<kLanes> xh = (Load<kLanes>(xr + i) - m) * inv;
      const Vec<kLanes> d = Load<kLanes>(dyr + i);
      const Vec<kLanes> g = d * Load<kLanes>(scale + i);
      acc_g += g;
      acc_gx += g * xh;
      Vec<kLanes> ds = Load<kLanes>(dscale + i) + d * xh;
      Vec<kLanes> db = Load<kLanes>(dbias + i) + d;
      Store<kLanes>(dscale + i, ds);
      Store<kLanes>(dbias + i, db);
    }
    float sum_g = HorizontalSum(acc_g), sum_gx = HorizontalSum(acc_gx);
    for (; i < c; ++i) {
      const float xh = (xr[i] - m) * inv;
      const float g = dyr[i] * scale[i];
      sum_g += g;
      sum_gx += g * xh;
      dscale[i] += dyr[i] * xh;
      dbias[i] += dyr[i];
    }
    const float mean_g = sum_g / static_cast<float>(c), mean_gx = sum_gx / static_cast<float>(c);
    for (int64_t j = 0; j < c; ++j) {
      const float xh = (xr[j] - m) * inv;
      dxr[j] = inv * (dyr[j] * scale[j] - mean_g - xh * mean_gx);
    }
  }
}

// Shapes shared by forward and backward; an error message if they do not fit together.
struct Layout {
  int64_t rows, c, groups, rows_per_group;
};

ffi::ErrorOr<Layout> MakeLayout(const Array& x, const Array& scale, const Array& bias,
                                const char* what) {
  const int64_t c = LastDim(x.dimensions()), rows = LeadingSize(x.dimensions());
  const int64_t groups = LeadingSize(scale.dimensions());
  if (x.dimensions().size() == 0 || c < 1 || LastDim(scale.dimensions()) != c ||
      scale.element_count() != bias.element_count() || groups < 1 || rows % groups != 0)
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        std::string("layernorm_cpu ") + what + ": inconsistent shapes"));
  return Layout{rows, c, groups, rows / groups};
}

ffi::Error Forward(ffi::ThreadPool pool, Array x, Array scale, Array bias, ffi::Result<Array> y,
                   ffi::Result<Array> mean, ffi::Result<Array> rstd, float eps) {
  auto layout = MakeLayout(x, scale, bias, "forward");
  if (layout.has_error()) return layout.error();
  const Layout l = layout.value();
  if (y->element_count() != x.element_count() || mean->element_count() != static_cast<size_t>(l.rows) ||
      rstd->element_count() != static_cast<size_t>(l.rows))
    return ffi::Error::InvalidArgument("layernorm_cpu forward: inconsistent result shapes");
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data();
  float *yp = y->typed_data(), *mp = mean->typed_data(), *rp = rstd->typed_data();
  const int64_t chunks = NumChunks(l.rows, pool);
  ParallelFor(pool, l.rows == 0 ? 0 : chunks, [&](int64_t k) {
    ForwardRows(xp, sp, bp, yp, mp, rp, l.c, l.rows_per_group, eps, l.rows * k / chunks,
                l.rows * (k + 1) / chunks);
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, Array x, Array scale, Array mean, Array rstd, Array dy,
                    ffi::Result<Array> dx, ffi::Result<Array> dscale, ffi::Result<Array> dbias) {
  auto layout = MakeLayout(x, scale, scale, "backward");
  if (layout.has_error()) return layout.error();
  const Layout l = layout.value();
  if (dy.element_count() != x.element_count() || dx->element_count() != x.element_count() ||
      mean.element_count() != static_cast<size_t>(l.rows) ||
      rstd.element_count() != static_cast<size_t>(l.rows) ||
      dscale->element_count() != scale.element_count() || dbias->element_count() != scale.element_count())
    return ffi::Error::InvalidArgument("layernorm_cpu backward: inconsistent shapes");
  // Chunks of rows within each group, sized by the shape only (deterministic sums).
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / l.c);
  const int64_t per_group = std::max<int64_t>(1, (l.rows_per_group + rows_per_chunk - 1) / rows_per_chunk);
  const int64_t chunks = l.groups * per_group;
  std::vector<float> partial(static_cast<size_t>(chunks * 2 * l.c), 0.0f);
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *mp = mean.typed_data();
  const float *rp = rstd.typed_data(), *dyp = dy.typed_data();
  float* dxp = dx->typed_data();
  ParallelFor(pool, chunks, [&](int64_t k) {
    const int64_t g = k / per_group, j = k % per_group;
    const int64_t first = g * l.rows_per_group;
    float* part = partial.data() + k * 2 * l.c;
    BackwardRows(xp, sp + g * l.c, mp, rp, dyp, dxp, part, part + l.c, l.c,
                 first + l.rows_per_group * j / per_group, first + l.rows_per_group * (j + 1) / per_group);
  });
  float *dsp = dscale->typed_data(), *dbp = dbias->typed_data();
  for (int64_t g = 0; g < l.groups; ++g) {
    float* ds = dsp + g * l.c;
    float* db = dbp + g * l.c;
    std::fill(ds, ds + l.c, 0.0f);
    std::fill(db, db + l.c, 0.0f);
    for (int64_t j = 0; j < per_group; ++j) {
      const float* part = partial.data() + (g * per_group + j) * 2 * l.c;
      for (int64_t i = 0; i < l.c; ++i) {
        ds[i] += part[i];
        db[i] += part[l.c + i];
      }
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxLayerNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()   // x (..., C)
                                  .Arg<Array>()   // scale (G, C) or (C,)
                                  .Arg<Array>()   // bias, as scale
                                  .Ret<Array>()   // y, as x
                                  .Ret<Array>()   // mean (...)
                                  .Ret<Array>()   // rstd (...)
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxLayerNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()   // x (..., C)
                                  .Arg<Array>()   // scale (G, C) or (C,)
                                  .Arg<Array>()   // mean (...)
                                  .Arg<Array>()   // rstd (...)
                                  .Arg<Array>()   // dy, as x
                                  .Ret<Array>()   // dx, as x
                                  .Ret<Array>()   // dscale, as scale
                                  .Ret<Array>()   // dbias, as scale
                                  );

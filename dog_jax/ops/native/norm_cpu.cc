// Native CPU LayerNorm (over the last axis) and training-mode BatchNorm (over all other axes) for
// dog_jax, called from JAX through the XLA FFI. LayerNorm:
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

namespace {

using dog_jax_native::Load;
using dog_jax_native::NumChunks;
using dog_jax_native::ParallelFor;
using dog_jax_native::Store;
using dog_jax_native::Vec;
namespace ffi = xla::ffi;

using Array = ffi::Buffer<ffi::F32>;  // any rank

constexpr int kLanes = 16;
// Rows per partial sum of dscale/dbias: about this many elements per chunk.
constexpr int64_t kChunkElements = 1 << 15;

// Product of all dimensions but the last (1 for a vector).
int64_t LeadingSize(ffi::Span<const int64_t> dims) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) n *= dims[i];
  return n;
}

int64_t LastDim(ffi::Span<const int64_t> dims) { return dims.size() == 0 ? 1 : dims[dims.size() - 1]; }

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


// ---------------------------------------------------------------------------------------------
// BatchNorm in training mode over the rows of x viewed as (rows, C), C the last axis (N·H·W rows):
//
//   DogJaxBatchNormForward:   mean[c] = Σ_r x[r,c] / M,  var[c] = Σ_r (x[r,c] − mean[c])² / M (biased)
//                             y[r,c]  = (x[r,c] − mean[c]) · rstd[c] · scale[c] + bias[c],
//                             rstd = 1 / sqrt(var + eps), M = rows
//   DogJaxBatchNormBackward:  with x̂ = (x − mean)·rstd:  dbias = Σ_r dy,  dscale = Σ_r dy·x̂,
//                             dx = scale·rstd · (dy − dbias/M − x̂ · dscale/M)
//
// The column sums are per chunk of rows (chunking fixed by the shape: deterministic), combined in
// chunk order in double. The variance is two-pass within each chunk (sum, then squared deviations
// from the chunk's own mean while the chunk is still in cache) and the chunks are combined with the
// exact parallel formula M2 = Σ_k M2_k + Σ_k n_k (mean_k − mean)², so the forward reads x from
// memory twice (statistics, output) instead of three times, with two-pass accuracy.

struct Chunks {
  int64_t rows_per_chunk, count;
};

Chunks RowChunks(int64_t rows, int64_t c) {
  const int64_t per = std::max<int64_t>(1, kChunkElements / c);
  return {per, (rows + per - 1) / per};
}

// Chunk [r0, r1): sum[c] and M2[c] about the chunk mean.
DOG_JAX_CLONES void ChunkMoments(const float* x, int64_t c, int64_t r0, int64_t r1, float* sum,
                                 float* m2) {
  std::fill(sum, sum + c, 0.0f);
  std::fill(m2, m2 + c, 0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    for (int64_t i = 0; i < c; ++i) sum[i] += xr[i];
  }
  const float inv_n = 1.0f / static_cast<float>(r1 - r0);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    for (int64_t i = 0; i < c; ++i) {
      const float d = xr[i] - sum[i] * inv_n;
      m2[i] += d * d;
    }
  }
}

// y for rows [r0, r1) from per-channel mean, rstd.
DOG_JAX_CLONES void BatchNormRows(const float* x, const float* mean, const float* rstd,
                                  const float* scale, const float* bias, float* y, int64_t c,
                                  int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    for (int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - mean[i]) * rstd[i] * scale[i] + bias[i];
  }
}

// Chunk [r0, r1): Σ dy and Σ dy·x̂ per channel.
DOG_JAX_CLONES void ChunkGradSums(const float* x, const float* dy, const float* mean, const float* rstd,
                                  int64_t c, int64_t r0, int64_t r1, float* sum_dy, float* sum_dyx) {
  std::fill(sum_dy, sum_dy + c, 0.0f);
  std::fill(sum_dyx, sum_dyx + c, 0.0f);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    const float* dr = dy + r * c;
    for (int64_t i = 0; i < c; ++i) {
      sum_dy[i] += dr[i];
      sum_dyx[i] += dr[i] * ((xr[i] - mean[i]) * rstd[i]);
    }
  }
}

// dx = a·(dy − b − x̂·k) for rows [r0, r1), per-channel a = scale·rstd, b = Σdy/M, k = Σdy·x̂/M.
DOG_JAX_CLONES void BatchNormGradRows(const float* x, const float* dy, const float* mean,
                                      const float* rstd, const float* a, const float* b, const float* k,
                                      float* dx, int64_t c, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * c;
    const float* dr = dy + r * c;
    float* out = dx + r * c;
    for (int64_t i = 0; i < c; ++i) out[i] = a[i] * (dr[i] - b[i] - (xr[i] - mean[i]) * rstd[i] * k[i]);
  }
}

bool ChannelsMatch(const Array& x, std::initializer_list<const Array*> per_channel, int64_t& rows,
                   int64_t& c) {
  c = LastDim(x.dimensions());
  rows = LeadingSize(x.dimensions());
  if (x.dimensions().size() == 0 || c < 1 || rows < 1) return false;
  for (const Array* a : per_channel)
    if (a->element_count() != static_cast<size_t>(c)) return false;
  return true;
}

ffi::Error BatchNormForward(ffi::ThreadPool pool, Array x, Array scale, Array bias, ffi::Result<Array> y,
                            ffi::Result<Array> mean, ffi::Result<Array> var, float eps) {
  int64_t rows, c;
  if (!ChannelsMatch(x, {&scale, &bias}, rows, c) || y->element_count() != x.element_count() ||
      mean->element_count() != static_cast<size_t>(c) || var->element_count() != static_cast<size_t>(c))
    return ffi::Error::InvalidArgument("batchnorm_cpu forward: inconsistent shapes");
  const float* xp = x.typed_data();
  const Chunks ch = RowChunks(rows, c);
  std::vector<float> partial(static_cast<size_t>(ch.count * 2 * c));
  ParallelFor(pool, ch.count, [&](int64_t k) {
    const int64_t r0 = k * ch.rows_per_chunk, r1 = std::min(rows, r0 + ch.rows_per_chunk);
    ChunkMoments(xp, c, r0, r1, partial.data() + 2 * k * c, partial.data() + (2 * k + 1) * c);
  });
  // Combine in chunk order, in double.
  std::vector<double> total(static_cast<size_t>(c), 0.0), m2(static_cast<size_t>(c), 0.0);
  for (int64_t k = 0; k < ch.count; ++k)
    for (int64_t i = 0; i < c; ++i) total[i] += partial[2 * k * c + i];
  std::vector<float> mean_f(static_cast<size_t>(c)), rstd_f(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) mean_f[i] = static_cast<float>(total[i] / static_cast<double>(rows));
  for (int64_t k = 0; k < ch.count; ++k) {
    const int64_t n = std::min(rows, (k + 1) * ch.rows_per_chunk) - k * ch.rows_per_chunk;
    for (int64_t i = 0; i < c; ++i) {
      const double d = static_cast<double>(partial[2 * k * c + i]) / n - total[i] / rows;
      m2[i] += partial[(2 * k + 1) * c + i] + n * d * d;
    }
  }
  float *mp = mean->typed_data(), *vp = var->typed_data();
  for (int64_t i = 0; i < c; ++i) {
    vp[i] = static_cast<float>(m2[i] / static_cast<double>(rows));
    mp[i] = mean_f[i];
    rstd_f[i] = 1.0f / std::sqrt(vp[i] + eps);
  }
  const float *sp = scale.typed_data(), *bp = bias.typed_data();
  float* yp = y->typed_data();
  const int64_t chunks = NumChunks(rows, pool);
  ParallelFor(pool, chunks, [&](int64_t k) {
    BatchNormRows(xp, mean_f.data(), rstd_f.data(), sp, bp, yp, c, rows * k / chunks,
                  rows * (k + 1) / chunks);
  });
  return ffi::Error::Success();
}

ffi::Error BatchNormBackward(ffi::ThreadPool pool, Array x, Array scale, Array mean, Array var, Array dy,
                             ffi::Result<Array> dx, ffi::Result<Array> dscale, ffi::Result<Array> dbias,
                             float eps) {
  int64_t rows, c;
  if (!ChannelsMatch(x, {&scale, &mean, &var}, rows, c) || dy.element_count() != x.element_count() ||
      dx->element_count() != x.element_count() || dscale->element_count() != static_cast<size_t>(c) ||
      dbias->element_count() != static_cast<size_t>(c))
    return ffi::Error::InvalidArgument("batchnorm_cpu backward: inconsistent shapes");
  const float *xp = x.typed_data(), *dyp = dy.typed_data(), *mp = mean.typed_data();
  const float *vp = var.typed_data(), *sp = scale.typed_data();
  std::vector<float> rstd(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) rstd[i] = 1.0f / std::sqrt(vp[i] + eps);
  const Chunks ch = RowChunks(rows, c);
  std::vector<float> partial(static_cast<size_t>(ch.count * 2 * c));
  ParallelFor(pool, ch.count, [&](int64_t k) {
    const int64_t r0 = k * ch.rows_per_chunk, r1 = std::min(rows, r0 + ch.rows_per_chunk);
    ChunkGradSums(xp, dyp, mp, rstd.data(), c, r0, r1, partial.data() + 2 * k * c,
                  partial.data() + (2 * k + 1) * c);
  });
  std::vector<double> sum_dy(static_cast<size_t>(c), 0.0), sum_dyx(static_cast<size_t>(c), 0.0);
  for (int64_t k = 0; k < ch.count; ++k)
    for (int64_t i = 0; i < c; ++i) {
      sum_dy[i] += partial[2 * k * c + i];
      sum_dyx[i] += partial[(2 * k + 1) * c + i];
    }
  std::vector<float> a(static_cast<size_t>(c)), b(static_cast<size_t>(c)), kk(static_cast<size_t>(c));
  float *dsp = dscale->typed_data(), *dbp = dbias->typed_data();
  for (int64_t i = 0; i < c; ++i) {
    dbp[i] = static_cast<float>(sum_dy[i]);
    dsp[i] = static_cast<float>(sum_dyx[i]);
    a[i] = sp[i] * rstd[i];
    b[i] = static_cast<float>(sum_dy[i] / rows);
    kk[i] = static_cast<float>(sum_dyx[i] / rows);
  }
  float* dxp = dx->typed_data();
  const int64_t chunks = NumChunks(rows, pool);
  ParallelFor(pool, chunks, [&](int64_t k) {
    BatchNormGradRows(xp, dyp, mp, rstd.data(), a.data(), b.data(), kk.data(), dxp, c, rows * k / chunks,
                      rows * (k + 1) / chunks);
  });
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxBatchNormForward, BatchNormForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()   // x (..., C)
                                  .Arg<Array>()   // scale (C,)
                                  .Arg<Array>()   // bias (C,)
                                  .Ret<Array>()   // y, as x
                                  .Ret<Array>()   // mean (C,)
                                  .Ret<Array>()   // var (C,), biased
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DogJaxBatchNormBackward, BatchNormBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array>()   // x (..., C)
                                  .Arg<Array>()   // scale (C,)
                                  .Arg<Array>()   // mean (C,)
                                  .Arg<Array>()   // var (C,)
                                  .Arg<Array>()   // dy, as x
                                  .Ret<Array>()   // dx, as x
                                  .Ret<Array>()   // dscale (C,)
                                  .Ret<Array>()   // dbias (C,)
                                  .Attr<float>("eps"));

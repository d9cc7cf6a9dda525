// Native CPU BatchNorm in training mode for dog_jax, called from JAX through the XLA FFI: statistics
// over the rows of x viewed as (rows, C), C the last axis (N·H·W rows):
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

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "norm_shapes.h"

namespace {

using dog_jax_native::NumChunks;
using dog_jax_native::ParallelFor;
using dog_jax_native::Array;
using dog_jax_native::kChunkElements;
using dog_jax_native::LastDim;
using dog_jax_native::LeadingSize;
namespace ffi = xla::ffi;

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

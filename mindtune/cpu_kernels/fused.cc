// Fused float32 CPU kernels for MindSpore's Custom "aot" operators (see __init__.py for why and how they are used).
// Every function has the signature MindSpore 2.9 calls: the inputs' and then the outputs' pointers in `params`,
// their ranks in `ndims` and shapes in `shapes`. They run on the calling thread: a second OpenMP pool beside
// MindSpore's own threads made their times bimodal on a 2-core host, and one thread already streams these
// memory-bound loops at about the rate of two.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

int64_t elements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

bool all_float32(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; i++)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

}  // namespace

// y = x * w / sqrt(mean(x^2) + eps) over the last axis. x [..., h], w [h], eps [1] -> y [..., h]
extern "C" int rms_norm_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *, void *) {
  if (nparam != 4 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t h = shapes[0][ndims[0] - 1];
  const int64_t rows = elements(ndims[0], shapes[0]) / h;
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * h;
    float *yr = y + r * h;
    float squares = 0.f;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < h; j++) squares += xr[j] * xr[j];
    const float scale = 1.0f / std::sqrt(squares / h + eps);
#pragma omp simd
    for (int64_t j = 0; j < h; j++) yr[j] = xr[j] * scale * w[j];
  }
  return 0;
}

// With s = 1 / sqrt(mean(x^2) + eps) per row: dx = s * dy * w - (s^3 / h) * x * sum(dy * w * x),
// dw = sum over rows of dy * x * s. x, dy [..., h], w [h], eps [1] -> dx [..., h], dw [h]
extern "C" int rms_norm_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *, void *) {
  if (nparam != 6 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  const float *dy = static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dw = static_cast<float *>(params[5]);
  const int64_t h = shapes[0][ndims[0] - 1];
  const int64_t rows = elements(ndims[0], shapes[0]) / h;
  std::vector<double> dw_sum(h, 0.0);   // summed over up to B*T rows: double keeps it near MindSpore's ReduceSum
  std::vector<float> dw_row(h);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * h, *dyr = dy + r * h;
    float *dxr = dx + r * h;
    float squares = 0.f, dot = 0.f;
#pragma omp simd reduction(+ : squares, dot)
    for (int64_t j = 0; j < h; j++) {
      squares += xr[j] * xr[j];
      dot += dyr[j] * w[j] * xr[j];
    }
    const float scale = 1.0f / std::sqrt(squares / h + eps);
    const float along_x = scale * scale * scale / h * dot;
#pragma omp simd
    for (int64_t j = 0; j < h; j++) {
      dxr[j] = scale * dyr[j] * w[j] - along_x * xr[j];
      dw_row[j] = dyr[j] * xr[j] * scale;
    }
    for (int64_t j = 0; j < h; j++) dw_sum[j] += dw_row[j];
  }
  for (int64_t j = 0; j < h; j++) dw[j] = static_cast<float>(dw_sum[j]);
  return 0;
}

// y = x * sigmoid(x). x -> y, any shape
extern "C" int silu_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                            void *) {
  if (nparam != 2 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = elements(ndims[0], shapes[0]);
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + std::exp(-x[i]));
  return 0;
}

// dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x). x, dy -> dx
extern "C" int silu_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                             void *) {
  if (nparam != 3 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = elements(ndims[0], shapes[0]);
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    const float s = 1.0f / (1.0f + std::exp(-x[i]));
    dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
  return 0;
}

// Rotary embedding, MindFormers' rotate-half form: y = x * cos + rotate(x) * sin, rotate(x) = [-x2, x1] for the two
// halves of the last axis. x [B, H, T, D]; cos, sin [C, T, D] with C = 1 (shared by the batch) or B -> y [B, H, T, D]
namespace {
void rope(const float *x, const float *cos, const float *sin, float *y, const int64_t *xs, const int64_t *cs,
          bool transpose) {
  const int64_t batch = xs[0], heads = xs[1], length = xs[2], dim = xs[3], half = dim / 2;
  for (int64_t b = 0; b < batch; b++) {
    const int64_t table = (cs[0] == 1 ? 0 : b) * length * dim;
    for (int64_t h = 0; h < heads; h++) {
      for (int64_t t = 0; t < length; t++) {
        const int64_t row = ((b * heads + h) * length + t) * dim;
        const float *xr = x + row, *c = cos + table + t * dim, *s = sin + table + t * dim;
        float *yr = y + row;
        if (!transpose) {          // forward
#pragma omp simd
          for (int64_t j = 0; j < half; j++) {
            yr[j] = xr[j] * c[j] - xr[j + half] * s[j];
            yr[j + half] = xr[j + half] * c[j + half] + xr[j] * s[j + half];
          }
        } else {                   // the backward: dx = dy * cos + rotate^T(dy * sin), rotate^T(z) = [z2, -z1]
#pragma omp simd
          for (int64_t j = 0; j < half; j++) {
            yr[j] = xr[j] * c[j] + xr[j + half] * s[j + half];
            yr[j + half] = xr[j + half] * c[j + half] - xr[j] * s[j];
          }
        }
      }
    }
  }
}

bool rope_shapes(int nparam, int *ndims, int64_t **shapes, const char **dtypes) {
  return nparam == 4 && all_float32(nparam, dtypes) && ndims[0] == 4 && ndims[1] == 3 && ndims[2] == 3 &&
         shapes[0][3] % 2 == 0 && (shapes[1][0] == 1 || shapes[1][0] == shapes[0][0]) &&
         shapes[1][1] == shapes[0][2] && shapes[1][2] == shapes[0][3];
}
}  // namespace

extern "C" int rope_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                            void *) {
  if (!rope_shapes(nparam, ndims, shapes, dtypes)) return 1;
  rope(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
       static_cast<const float *>(params[2]), static_cast<float *>(params[3]), shapes[0], shapes[1], false);
  return 0;
}

// dy, cos, sin -> dx
extern "C" int rope_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                             void *) {
  if (!rope_shapes(nparam, ndims, shapes, dtypes)) return 1;
  rope(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
       static_cast<const float *>(params[2]), static_cast<float *>(params[3]), shapes[0], shapes[1], true);
  return 0;
}

namespace {
// `want` parameters, the first float32 logits [K, V] and the second int32 labels
bool logits_and_labels(int nparam, int want, int *ndims, const char **dtypes) {
  return nparam == want && ndims[0] == 2 && std::strcmp(dtypes[0], "float32") == 0 &&
         std::strcmp(dtypes[1], "int32") == 0;
}
}  // namespace

// Log-probability of each row's label: out[k] = logits[k, labels[k]] - logsumexp(logits[k]), and lse[k].
// logits [K, V] float32, labels [K] int32 (in [0, V)) -> out [K], lse [K]
extern "C" int label_log_softmax_forward(int nparam, void **params, int *ndims, int64_t **shapes,
                                         const char **dtypes, void *, void *) {
  if (!logits_and_labels(nparam, 4, ndims, dtypes)) return 1;
  const float *logits = static_cast<const float *>(params[0]);
  const int32_t *labels = static_cast<const int32_t *>(params[1]);
  float *out = static_cast<float *>(params[2]);
  float *lse = static_cast<float *>(params[3]);
  const int64_t rows = shapes[0][0], vocab = shapes[0][1];
  for (int64_t k = 0; k < rows; k++) {
    const float *row = logits + k * vocab;
    float top = row[0];
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < vocab; j++) top = row[j] > top ? row[j] : top;
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < vocab; j++) total += std::exp(row[j] - top);
    lse[k] = top + std::log(total);
    const int32_t label = labels[k];
    out[k] = (label >= 0 && label < vocab) ? row[label] - lse[k] : 0.f;
  }
  return 0;
}

// d logits[k, j] = dout[k] * ([j == labels[k]] - exp(logits[k, j] - lse[k])).
// logits [K, V], labels [K], lse [K], dout [K] -> dlogits [K, V]
extern "C" int label_log_softmax_backward(int nparam, void **params, int *ndims, int64_t **shapes,
                                          const char **dtypes, void *, void *) {
  if (!logits_and_labels(nparam, 5, ndims, dtypes)) return 1;
  const float *logits = static_cast<const float *>(params[0]);
  const int32_t *labels = static_cast<const int32_t *>(params[1]);
  const float *lse = static_cast<const float *>(params[2]);
  const float *dout = static_cast<const float *>(params[3]);
  float *dlogits = static_cast<float *>(params[4]);
  const int64_t rows = shapes[0][0], vocab = shapes[0][1];
  for (int64_t k = 0; k < rows; k++) {
    const float *row = logits + k * vocab;
    float *drow = dlogits + k * vocab;
    const float d = dout[k], shift = lse[k];
#pragma omp simd
    for (int64_t j = 0; j < vocab; j++) drow[j] = -d * std::exp(row[j] - shift);
    const int32_t label = labels[k];
    if (label >= 0 && label < vocab) drow[label] += d;
  }
  return 0;
}

// Swap the two middle axes: x [A, B, C, D] -> y [A, C, B, D] (Transpose with perm (0, 2, 1, 3), which is its own
// inverse, so its backward is the same kernel). Each row of D elements is one contiguous copy.
extern "C" int swap_middle_axes(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *, void *) {
  if (nparam != 2 || ndims[0] != 4 || !all_float32(nparam, dtypes)) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t a = shapes[0][0], b = shapes[0][1], c = shapes[0][2], d = shapes[0][3];
  for (int64_t i = 0; i < a; i++)
    for (int64_t k = 0; k < c; k++)
      for (int64_t j = 0; j < b; j++)
        std::memcpy(y + ((i * c + k) * b + j) * d, x + ((i * b + j) * c + k) * d, sizeof(float) * d);
  return 0;
}

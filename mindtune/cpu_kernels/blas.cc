// Float32 matrix products on OpenBLAS (the scipy-openblas32 wheel, the build numpy and scipy ship) for MindSpore's
// Custom "aot" operators (see __init__.py, `matmul`, for why). The signature is the one MindSpore 2.9 calls: the
// inputs' and then the output's pointers in `params`, their ranks in `ndims` and shapes in `shapes`. Row-major
// throughout; `a`'s leading axes are flattened into rows. Returns 1 (MindSpore raises) on any other dtype or shape.
#include <cstdint>
#include <cstring>

#include "cblas.h"

namespace {

struct Operands {
  const float *a, *b;
  float *out;
  int64_t a_rows, a_cols, b_rows, b_cols;
};

bool operands(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, Operands *o) {
  if (nparam != 3 || ndims[0] < 1 || ndims[1] != 2) return false;
  for (int i = 0; i < 3; i++)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  o->a_cols = shapes[0][ndims[0] - 1];
  o->a_rows = 1;
  for (int i = 0; i < ndims[0] - 1; i++) o->a_rows *= shapes[0][i];
  o->b_rows = shapes[1][0];
  o->b_cols = shapes[1][1];
  o->a = static_cast<const float *>(params[0]);
  o->b = static_cast<const float *>(params[1]);
  o->out = static_cast<float *>(params[2]);
  return true;
}

}  // namespace

// out = a @ b^T: a [..., K], b [N, K] -> out [..., N] (a projection's forward, the weight stored [out, in])
extern "C" int matmul_nt(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  Operands o;
  if (!operands(nparam, params, ndims, shapes, dtypes, &o) || o.a_cols != o.b_cols) return 1;
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, o.a_rows, o.b_rows, o.a_cols, 1.f, o.a, o.a_cols,
                    o.b, o.b_cols, 0.f, o.out, o.b_rows);
  return 0;
}

// out = a @ b: a [..., N], b [N, K] -> out [..., K] (the input's gradient, dy @ W)
extern "C" int matmul_nn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  Operands o;
  if (!operands(nparam, params, ndims, shapes, dtypes, &o) || o.a_cols != o.b_rows) return 1;
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o.a_rows, o.b_cols, o.a_cols, 1.f, o.a, o.a_cols,
                    o.b, o.b_cols, 0.f, o.out, o.b_cols);
  return 0;
}

// out = a^T @ b over the rows: a [..., N], b [..., K] flattened to [M, N] and [M, K] -> out [N, K] (the weight's
// gradient, dy^T x). b is passed 2-D ([M, K]) by the caller.
extern "C" int matmul_tn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *,
                         void *) {
  Operands o;
  if (!operands(nparam, params, ndims, shapes, dtypes, &o) || o.a_rows != o.b_rows) return 1;
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o.a_cols, o.b_cols, o.a_rows, 1.f, o.a, o.a_cols,
                    o.b, o.b_cols, 0.f, o.out, o.b_cols);
  return 0;
}

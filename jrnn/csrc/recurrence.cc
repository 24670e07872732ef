// The time loop of jrnn.elman, jrnn.gru and jrnn.lstm, forward and backward, as two XLA FFI handlers.
//
// The math, the split of a step into p, q and the update, and what stays in XLA are in jrnn/_cpu_kernel.py.
// Layouts are row-major and batch-major, as jrnn's [B, T, ...] arrays are (no transposes around the call):
// p [B, T, G*H], wh [H, G*H], carries [B, H], lengths [B] (int32); ws [T, B, K*H] is the kernel's own.
// Step t of row b is real when t < lengths[b] (right padding); a padded step leaves the carry unchanged and
// outputs 0, as jrnn's masked steps do. `reverse` runs t = T-1 .. 0, so a padded row starts at its last real step.
//
// Unless ws is empty (the primal pass: no gradient to come), the forward pass stores per step what the backward
// pass needs (ws, see Stored) and the carry h entering the step (hprev, which XLA also uses for
// dWh = sum h_{t-1}^T dq). The backward pass walks the steps in the other
// order and returns dp [B, T, G*H] (= dq for Elman and LSTM), GRU's dq_n [B, T, H] (the n block of dq, which is
// dp_n * r), and the gradients of the initial carry. Per step: one GEMM through OpenBLAS (h_{t-1} Wh forward,
// dq Wh^T backward) and one pass of the gate arithmetic.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cblas.h"  // scipy-openblas32: every symbol carries the prefix scipy_
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Cell : int32_t { kElman = 0, kGru = 1, kLstm = 2 };

// Gate blocks per cell (G) and stored values per step and hidden unit (K): Elman h_t; GRU r, z, n, q_n;
// LSTM i, f, g, o (activated), tanh(c_t), c_{t-1}.
int Gates(int32_t cell) { return cell == kElman ? 1 : cell == kGru ? 3 : 4; }
int Stored(int32_t cell) { return cell == kElman ? 1 : cell == kGru ? 4 : 6; }

#define JRNN_INLINE inline __attribute__((always_inline))

// float32 exp and tanh without branches or calls, so that the gate loops vectorize: glibc's tanhf is a scalar call
// of tens of nanoseconds, which made the gate pass, not the GEMM, the cost of a step. Both are the classic
// minimax forms (range reduction by ln 2 and a degree-6 polynomial for exp; an odd polynomial below |x| = 0.625
// and 1 - 2 / (e^{2|x|} + 1) above it for tanh), within a few float32 ulps of the exact values. float64 uses libm.
JRNN_INLINE float Exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = x * 1.44269504088896341f + 0.5f;  // x / ln 2, rounded down below
  int n = static_cast<int>(t);
  n -= static_cast<float>(n) > t ? 1 : 0;
  const float fn = static_cast<float>(n);
  float r = x - fn * 0.693359375f;  // ln 2 in two parts, so that r is exact
  r = r + fn * 2.12194440e-4f;
  const float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
                   1.6666665459e-1f) * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  int bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
inline double Exp(double x) { return std::exp(x); }

JRNN_INLINE float Tanh(float x) {
  const float a = x < 0.0f ? -x : x;
  const float s = x * x;
  const float small = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s +
                        1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
  float large = 1.0f - 2.0f / (Exp(2.0f * a) + 1.0f);
  large = x < 0.0f ? -large : large;
  return a < 0.625f ? small : large;
}
inline double Tanh(double x) { return std::tanh(x); }

template <typename T>
JRNN_INLINE T Sigmoid(T x) {
  return T(1) / (T(1) + Exp(-x));
}

// C[M, N] = A[M, K] op(B) + beta C, row-major, A's rows lda apart; op(B) = B [K, N] or, with trans_b, B^T for
// B [N, K].
inline void Gemm(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b, float beta, float* c) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b,
                    trans_b ? k : n, beta, c, n);
}
inline void Gemm(bool trans_b, int m, int n, int k, const double* a, int lda, const double* b, double beta,
                 double* c) {
  scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, lda, b,
                    trans_b ? k : n, beta, c, n);
}

// The activations in place over a contiguous block, in loops simple enough to vectorize.
template <typename T>
JRNN_INLINE void SigmoidInPlace(T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = Sigmoid(x[j]);
}
template <typename T>
JRNN_INLINE void TanhInPlace(T* __restrict x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = Tanh(x[j]);
}

template <typename T>
JRNN_INLINE void Forward(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden, const T* p,
                         const T* wh, const T* bhn, const T* h0, const T* c0, const int32_t* lengths, T* hs,
                         T* h, T* c, T* ws, T* hprev) {
  const int64_t H = hidden, GH = Gates(cell) * H, KH = Stored(cell) * H;
  std::memcpy(h, h0, sizeof(T) * batch * H);
  std::memcpy(c, c0, sizeof(T) * batch * H);
  std::vector<T> q(batch * GH);
  const bool store = ws != nullptr;  // without a backward pass to come (inference), ws and hprev are not kept
  std::vector<T> scratch(store ? 0 : batch * KH);
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    Gemm(false, batch, GH, H, h, H, wh, T(0), q.data());
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t bt = b * steps + t;  // row b, step t of the batch-major arrays
      const T* __restrict pb = p + bt * GH;
      const T* __restrict qb = q.data() + b * GH;
      T* __restrict out = hs + bt * H;
      T* __restrict w = store ? ws + (t * batch + b) * KH : scratch.data() + b * KH;  // the gates, in place
      T* __restrict hb = h + b * H;
      if (store) std::memcpy(hprev + bt * H, hb, sizeof(T) * H);
      if (t >= lengths[b]) {
        std::memset(out, 0, sizeof(T) * H);
        std::memset(w, 0, sizeof(T) * KH);
        continue;
      }
      if (cell == kElman) {  // w: h_t
        for (int64_t j = 0; j < H; ++j) w[j] = pb[j] + qb[j];
        TanhInPlace(w, H);
        std::memcpy(hb, w, sizeof(T) * H);
        std::memcpy(out, w, sizeof(T) * H);
      } else if (cell == kGru) {  // w: r, z, n, q_n
        for (int64_t j = 0; j < 2 * H; ++j) w[j] = pb[j] + qb[j];
        SigmoidInPlace(w, 2 * H);
        for (int64_t j = 0; j < H; ++j) {
          w[3 * H + j] = qb[2 * H + j] + bhn[j];
          w[2 * H + j] = pb[2 * H + j] + w[j] * w[3 * H + j];
        }
        TanhInPlace(w + 2 * H, H);
        for (int64_t j = 0; j < H; ++j) {
          const T z = w[H + j], n = w[2 * H + j];
          hb[j] = out[j] = (T(1) - z) * n + z * hb[j];
        }
      } else {  // w: i, f, g, o, tanh(c_t), c_{t-1}
        T* __restrict cb = c + b * H;
        for (int64_t j = 0; j < 4 * H; ++j) w[j] = pb[j] + qb[j];
        SigmoidInPlace(w, 2 * H);
        TanhInPlace(w + 2 * H, H);
        SigmoidInPlace(w + 3 * H, H);
        for (int64_t j = 0; j < H; ++j) {
          w[5 * H + j] = cb[j];
          cb[j] = w[H + j] * cb[j] + w[j] * w[2 * H + j];
          w[4 * H + j] = cb[j];
        }
        TanhInPlace(w + 4 * H, H);
        for (int64_t j = 0; j < H; ++j) hb[j] = out[j] = w[3 * H + j] * w[4 * H + j];
      }
    }
  }
}

template <typename T>
JRNN_INLINE void Backward(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden, const T* ws,
                          const T* hprev, const T* wh, const int32_t* lengths, const T* dhs, const T* dh_last,
                          const T* dc_last, T* dp, T* dqn, T* dh, T* dc) {
  const int64_t H = hidden, GH = Gates(cell) * H, KH = Stored(cell) * H;
  std::memcpy(dh, dh_last, sizeof(T) * batch * H);
  std::memcpy(dc, dc_last, sizeof(T) * batch * H);
  std::vector<T> dq_gru(cell == kGru ? batch * GH : 0);
  std::vector<T> dh_prev(batch * H);
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? s : steps - 1 - s;
    // dq = dp (its rows steps * GH apart in dp [B, T, G*H]) but for GRU's n block
    T* dq = cell == kGru ? dq_gru.data() : dp + t * GH;
    const int64_t ldq = cell == kGru ? GH : steps * GH;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t bt = b * steps + t;
      T* __restrict dpb = dp + bt * GH;
      T* __restrict dqb = dq + b * ldq;
      T* __restrict dnext = dh_prev.data() + b * H;
      const T* __restrict dhb = dh + b * H;
      if (t >= lengths[b]) {  // a padded step passed the carry through: so does its gradient
        std::memset(dpb, 0, sizeof(T) * GH);
        if (cell == kGru) {
          std::memset(dqb, 0, sizeof(T) * GH);
          std::memset(dqn + bt * H, 0, sizeof(T) * H);
        }
        std::memcpy(dnext, dhb, sizeof(T) * H);
        continue;
      }
      const T* __restrict w = ws + (t * batch + b) * KH;
      const T* __restrict dy = dhs + bt * H;
      if (cell == kElman) {
        for (int64_t j = 0; j < H; ++j) {
          const T g = dhb[j] + dy[j];
          dpb[j] = g * (T(1) - w[j] * w[j]);
          dnext[j] = T(0);
        }
      } else if (cell == kGru) {
        const T* __restrict hp = hprev + bt * H;
        T* __restrict dqnb = dqn + bt * H;
        for (int64_t j = 0; j < H; ++j) {
          const T g = dhb[j] + dy[j];
          const T r = w[j], z = w[H + j], n = w[2 * H + j], qn = w[3 * H + j];
          const T dn = g * (T(1) - z) * (T(1) - n * n);
          const T dz = g * (hp[j] - n) * z * (T(1) - z);
          const T dr = dn * qn * r * (T(1) - r);
          dpb[j] = dqb[j] = dr;
          dpb[H + j] = dqb[H + j] = dz;
          dpb[2 * H + j] = dn;
          dqb[2 * H + j] = dqnb[j] = dn * r;
          dnext[j] = g * z;
        }
      } else {
        T* __restrict dcb = dc + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const T g = dhb[j] + dy[j];
          const T i = w[j], f = w[H + j], gg = w[2 * H + j], o = w[3 * H + j], tc = w[4 * H + j], cp = w[5 * H + j];
          const T dct = dcb[j] + g * o * (T(1) - tc * tc);
          dpb[j] = dct * gg * i * (T(1) - i);
          dpb[H + j] = dct * cp * f * (T(1) - f);
          dpb[2 * H + j] = dct * i * (T(1) - gg * gg);
          dpb[3 * H + j] = g * tc * o * (T(1) - o);
          dcb[j] = dct * f;
          dnext[j] = T(0);
        }
      }
    }
    Gemm(true, batch, H, GH, dq, ldq, wh, T(1), dh_prev.data());  // dh_{t-1} += dq Wh^T
    std::memcpy(dh, dh_prev.data(), sizeof(T) * batch * H);
  }
}

// float32 is compiled for AVX-512, AVX2 and the baseline x86-64, picked at load time by the CPU (GCC's
// target_clones), as XLA compiles its own code for the host: the gate passes vectorize to the widest registers.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define JRNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define JRNN_CLONES
#endif

JRNN_CLONES void ForwardF32(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden, const float* p,
                            const float* wh, const float* bhn, const float* h0, const float* c0,
                            const int32_t* lengths, float* hs, float* h, float* c, float* ws, float* hprev) {
  Forward<float>(cell, reverse, steps, batch, hidden, p, wh, bhn, h0, c0, lengths, hs, h, c, ws, hprev);
}

JRNN_CLONES void BackwardF32(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden,
                             const float* ws, const float* hprev, const float* wh, const int32_t* lengths,
                             const float* dhs, const float* dh_last, const float* dc_last, float* dp, float* dqn,
                             float* dh, float* dc) {
  Backward<float>(cell, reverse, steps, batch, hidden, ws, hprev, wh, lengths, dhs, dh_last, dc_last, dp, dqn, dh, dc);
}

ffi::Error CheckCell(int32_t cell, int64_t gh, int64_t hidden) {
  if (cell != kElman && cell != kGru && cell != kLstm) return ffi::Error::InvalidArgument("jrnn: unknown cell");
  if (gh != Gates(cell) * hidden) return ffi::Error::InvalidArgument("jrnn: p's last axis is not G*H");
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::AnyBuffer p, ffi::AnyBuffer wh, ffi::AnyBuffer bhn, ffi::AnyBuffer h0, ffi::AnyBuffer c0,
                       ffi::Buffer<ffi::S32> lengths, ffi::Result<ffi::AnyBuffer> hs, ffi::Result<ffi::AnyBuffer> h,
                       ffi::Result<ffi::AnyBuffer> c, ffi::Result<ffi::AnyBuffer> ws,
                       ffi::Result<ffi::AnyBuffer> hprev, int32_t cell, bool reverse) {
  auto dims = p.dimensions();
  if (dims.size() != 3) return ffi::Error::InvalidArgument("jrnn: p must be [B, T, G*H]");
  const int64_t batch = dims[0], steps = dims[1], hidden = wh.dimensions()[0];
  if (auto error = CheckCell(cell, dims[2], hidden); error.failure()) return error;
  const int32_t* len = lengths.typed_data();
  const bool store = ws->element_count() > 0;  // ws and hprev of size 0: the primal pass, nothing to keep
  switch (p.element_type()) {
    case ffi::F32:
      ForwardF32(cell, reverse, steps, batch, hidden, p.typed_data<float>(), wh.typed_data<float>(),
                     bhn.typed_data<float>(), h0.typed_data<float>(), c0.typed_data<float>(), len,
                     hs->typed_data<float>(), h->typed_data<float>(), c->typed_data<float>(),
                     store ? ws->typed_data<float>() : nullptr, hprev->typed_data<float>());
      return ffi::Error::Success();
    case ffi::F64:
      Forward<double>(cell, reverse, steps, batch, hidden, p.typed_data<double>(), wh.typed_data<double>(),
                      bhn.typed_data<double>(), h0.typed_data<double>(), c0.typed_data<double>(), len,
                      hs->typed_data<double>(), h->typed_data<double>(), c->typed_data<double>(),
                      store ? ws->typed_data<double>() : nullptr, hprev->typed_data<double>());
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("jrnn: the CPU kernel takes float32 or float64");
  }
}

ffi::Error BackwardImpl(ffi::AnyBuffer ws, ffi::AnyBuffer hprev, ffi::AnyBuffer wh, ffi::Buffer<ffi::S32> lengths,
                        ffi::AnyBuffer dhs, ffi::AnyBuffer dh_last, ffi::AnyBuffer dc_last,
                        ffi::Result<ffi::AnyBuffer> dp, ffi::Result<ffi::AnyBuffer> dqn,
                        ffi::Result<ffi::AnyBuffer> dh, ffi::Result<ffi::AnyBuffer> dc, int32_t cell, bool reverse) {
  auto dims = dp->dimensions();
  if (dims.size() != 3) return ffi::Error::InvalidArgument("jrnn: dp must be [B, T, G*H]");
  const int64_t batch = dims[0], steps = dims[1], hidden = wh.dimensions()[0];
  if (auto error = CheckCell(cell, dims[2], hidden); error.failure()) return error;
  const int32_t* len = lengths.typed_data();
  switch (ws.element_type()) {
    case ffi::F32:
      BackwardF32(cell, reverse, steps, batch, hidden, ws.typed_data<float>(), hprev.typed_data<float>(),
                      wh.typed_data<float>(), len, dhs.typed_data<float>(), dh_last.typed_data<float>(),
                      dc_last.typed_data<float>(), dp->typed_data<float>(), dqn->typed_data<float>(),
                      dh->typed_data<float>(), dc->typed_data<float>());
      return ffi::Error::Success();
    case ffi::F64:
      Backward<double>(cell, reverse, steps, batch, hidden, ws.typed_data<double>(), hprev.typed_data<double>(),
                       wh.typed_data<double>(), len, dhs.typed_data<double>(), dh_last.typed_data<double>(),
                       dc_last.typed_data<double>(), dp->typed_data<double>(), dqn->typed_data<double>(),
                       dh->typed_data<double>(), dc->typed_data<double>());
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("jrnn: the CPU kernel takes float32 or float64");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRecurrenceForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // p [B, T, G*H]
                                  .Arg<ffi::AnyBuffer>()  // wh [H, G*H]
                                  .Arg<ffi::AnyBuffer>()  // bhn [H] (GRU; zeros otherwise)
                                  .Arg<ffi::AnyBuffer>()  // h0 [B, H]
                                  .Arg<ffi::AnyBuffer>()  // c0 [B, H] (LSTM; zeros otherwise)
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths [B]
                                  .Ret<ffi::AnyBuffer>()  // hs [B, T, H]
                                  .Ret<ffi::AnyBuffer>()  // h_T [B, H]
                                  .Ret<ffi::AnyBuffer>()  // c_T [B, H]
                                  .Ret<ffi::AnyBuffer>()  // ws [T, B, K*H], or [0]: not kept
                                  .Ret<ffi::AnyBuffer>()  // hprev [B, T, H], or [0]
                                  .Attr<int32_t>("cell")
                                  .Attr<bool>("reverse"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JrnnRecurrenceBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // ws [T, B, K*H]
                                  .Arg<ffi::AnyBuffer>()  // hprev [B, T, H]
                                  .Arg<ffi::AnyBuffer>()  // wh [H, G*H]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // lengths [B]
                                  .Arg<ffi::AnyBuffer>()  // dhs [B, T, H]
                                  .Arg<ffi::AnyBuffer>()  // dh_T [B, H]
                                  .Arg<ffi::AnyBuffer>()  // dc_T [B, H]
                                  .Ret<ffi::AnyBuffer>()  // dp [B, T, G*H]
                                  .Ret<ffi::AnyBuffer>()  // dq_n [B, T, H] (GRU) or [0]
                                  .Ret<ffi::AnyBuffer>()  // dh_0 [B, H]
                                  .Ret<ffi::AnyBuffer>()  // dc_0 [B, H]
                                  .Attr<int32_t>("cell")
                                  .Attr<bool>("reverse"));

// OpenBLAS's thread count for this process (the library is shared with anything else that loaded it).
extern "C" void JrnnSetBlasThreads(int threads) { scipy_openblas_set_num_threads(threads); }
extern "C" int JrnnGetBlasThreads() { return scipy_openblas_get_num_threads(); }

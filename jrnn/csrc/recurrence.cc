// The time loop of jrnn.elman, jrnn.gru and jrnn.lstm, forward and backward, as two XLA FFI handlers.
//
// The math, the split of a step into p, q and the update, and what stays in XLA are in jrnn/_cpu_kernel.py.
// Layouts are row-major and batch-major, as jrnn's [B, T, ...] arrays are (no transposes around the call):
// xs [B, T, I] or p [B, T, G*H], wh [H, G*H], carries [B, H], lengths [B] (int32); ws [T, B, K*H] is the
// kernel's own; the packed weights are described at PanelGemm.
// Step t of row b is real when t < lengths[b] (right padding); a padded step leaves the carry unchanged and
// outputs 0, as jrnn's masked steps do. `reverse` runs t = T-1 .. 0, so a padded row starts at its last real step.
//
// Unless ws is empty (the primal pass: no gradient to come), the forward pass stores per step what the backward
// pass needs (ws, see Stored) and the carry h entering the step (hprev, which XLA also uses for
// dWh = sum h_{t-1}^T dq). The backward pass walks the steps in the other
// order and returns dp [B, T, G*H] (= dq for Elman and LSTM), GRU's dq_n [B, T, H] (the n block of dq, which is
// dp_n * r), and the gradients of the initial carry. Per step: the GEMMs (x_t Wx + b and h_{t-1} Wh forward,
// dq Wh^T backward; the packed AVX-512 GEMM on the threads of a Team in float32, else OpenBLAS on one thread)
// and one pass of the gate arithmetic.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <unistd.h>  // getpid

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

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
// The gate loops read and write disjoint blocks of the same rows (w, p, q, h): no dependence between iterations, which
// GCC cannot prove through the offsets, and without this it runs them one float at a time.
#define JRNN_IVDEP _Pragma("GCC ivdep")

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

// C[M, N] = A[M, K] op(B) + beta C, row-major, rows lda, ldb and ldc apart; op(B) = B [K, N] or, with trans_b,
// B^T for B [N, K]. The path of float64 and of CPUs without AVX-512 (one thread).
inline void Gemm(bool trans_b, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta,
                 float* c, int ldc) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
                    beta, c, ldc);
}
inline void Gemm(bool trans_b, int m, int n, int k, const double* a, int lda, const double* b, int ldb, double beta,
                 double* c, int ldc) {
  scipy_cblas_dgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb,
                    beta, c, ldc);
}

// The packed GEMM of float32 steps on AVX-512. W_h is packed once per call (in XLA, jrnn/_cpu_kernel.py) into
// panels of kPanel = 32 columns, each panel [K, 32] contiguous, so that a step reads it in the order of use and
// never repacks it (OpenBLAS packs its B operand on every call: 85 GFLOP/s of a core's ~200 at M = 32). One panel
// times MR <= 8 rows of A is 2 * MR zmm accumulators; per k, two loads of the panel row and MR broadcasts of A.
constexpr int64_t kPanel = 32;

#if defined(__GNUC__) && defined(__x86_64__)
template <int MR>
__attribute__((target("avx512f"), always_inline)) inline void Tile(int64_t k, const float* __restrict a, int64_t lda,
                                                                    const float* __restrict w, float* __restrict c,
                                                                    int64_t ldc, __mmask16 m0, __mmask16 m1,
                                                                    bool accumulate, const float* bias) {
  __m512 lo[MR], hi[MR];
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    lo[r] = accumulate ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : b0;
    hi[r] = accumulate ? _mm512_maskz_loadu_ps(m1, c + r * ldc + 16) : b1;
  }
  for (int64_t i = 0; i < k; ++i) {
    const __m512 w0 = _mm512_loadu_ps(w + i * kPanel), w1 = _mm512_loadu_ps(w + i * kPanel + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + i]);
      lo[r] = _mm512_fmadd_ps(x, w0, lo[r]);
      hi[r] = _mm512_fmadd_ps(x, w1, hi[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, lo[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, hi[r]);
  }
}

// C[m, :n_valid] = A[m, k] W + (C, with accumulate; else bias [32] in every row, or 0) for one packed panel
// W [k, 32]; columns n_valid .. 31 of C are not touched.
__attribute__((target("avx512f"))) void PanelGemm(int64_t m, int64_t k, const float* a, int64_t lda, const float* w,
                                                  float* c, int64_t ldc, int64_t n_valid, bool accumulate,
                                                  const float* bias = nullptr) {
  const __mmask16 m0 = n_valid >= 16 ? 0xFFFF : (1u << n_valid) - 1;
  const __mmask16 m1 = n_valid >= 32 ? 0xFFFF : n_valid <= 16 ? 0 : (1u << (n_valid - 16)) - 1;
  int64_t r = 0;
  for (; r + 8 <= m; r += 8) Tile<8>(k, a + r * lda, lda, w, c + r * ldc, ldc, m0, m1, accumulate, bias);
  a += r * lda, c += r * ldc;
  switch (m - r) {
    case 7: Tile<7>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 6: Tile<6>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 5: Tile<5>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 4: Tile<4>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 3: Tile<3>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 2: Tile<2>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    case 1: Tile<1>(k, a, lda, w, c, ldc, m0, m1, accumulate, bias); break;
    default: break;
  }
}
bool PackedSupported() { return __builtin_cpu_supports("avx512f"); }
inline void Pause() { __builtin_ia32_pause(); }
#else
void PanelGemm(int64_t, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t, bool,
               const float* = nullptr) {}
bool PackedSupported() { return false; }
inline void Pause() {}
#endif
inline void PanelGemm(int64_t, int64_t, const double*, int64_t, const double*, double*, int64_t, int64_t, bool,
                      const double* = nullptr) {}

// The threads of one call: the caller is thread 0, and n - 1 parked workers join it. A call splits the hidden units
// into n ranges of whole panels; per step each thread computes its units' columns of every gate block and their
// update, then all meet at Sync (one spinning barrier per step, two in the backward pass) before the next step's
// GEMM reads the whole carry. Workers spin briefly between calls, then sleep on a condition variable, so that
// they do not take the cores from XLA's own pool between kernel calls. A call that finds the team busy (another
// kernel call running concurrently, e.g. on another device) runs on its own thread.
class Team {
 public:
  // One team per process, never destroyed (its detached threads outlive main). A child made by fork() has none
  // of its parent's threads, and maybe a mutex locked for ever: it gets a fresh team of its own.
  static Team& Get() {
    static std::atomic<Team*> team{nullptr};
    static std::atomic<pid_t> owner{0};
    const pid_t pid = getpid();
    Team* current = team.load(std::memory_order_acquire);
    if (current == nullptr || owner.load(std::memory_order_acquire) != pid) {
      Team* fresh = new Team;
      if (team.compare_exchange_strong(current, fresh, std::memory_order_acq_rel)) {
        owner.store(pid, std::memory_order_release);
        return *fresh;
      }
      delete fresh;  // another thread of this process made one first
      return *team.load(std::memory_order_acquire);
    }
    return *current;
  }

  bool Run(int n, const std::function<void(int, int)>& job) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    for (; workers_ < n - 1; ++workers_) {
      std::thread([this, id = workers_ + 1, seen = generation_.load()] { Work(id, seen); }).detach();
    }
    job_ = &job;
    active_ = n;
    count_.store(0, std::memory_order_relaxed);
    sense_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    mine_ = this;
    job(0, n);
    for (int i = 0; done_.load(std::memory_order_acquire) < workers_; ++i) Wait(i);
    return true;
  }

  // The team running the calling thread's job.
  static Team& Mine() { return *mine_; }

  // Every thread of the job calls Sync at the same points; sense starts at 0 in each thread.
  void Sync(int& sense) {
    sense ^= 1;
    if (count_.fetch_add(1, std::memory_order_acq_rel) == active_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      sense_.store(sense, std::memory_order_release);
    } else {
      for (int i = 0; sense_.load(std::memory_order_acquire) != sense; ++i) Wait(i);
    }
  }

 private:
  static void Wait(int i) {
    if (i < 256) {
      Pause();
    } else {
      std::this_thread::yield();  // the other thread was descheduled: let it run
    }
  }

  void Work(int id, uint64_t seen) {
    mine_ = this;
    for (;;) {
      for (int i = 0; generation_.load(std::memory_order_acquire) == seen; ++i) {
        if (i < 2000) {
          Pause();
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (id < active_) (*job_)(id, active_);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  std::mutex busy_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> count_{0}, sense_{0}, done_{0};
  const std::function<void(int, int)>* job_ = nullptr;
  static thread_local Team* mine_;
  int active_ = 1, workers_ = 0;
};

thread_local Team* Team::mine_ = nullptr;

std::atomic<int> g_threads{1};  // JrnnSetThreads

// Thread `id` of n owns panels [p0, p1) of the P = ceil(H / 32) panels: hidden units [u0, u1).
struct Units {
  int64_t p0, p1, u0, u1;
  Units(int id, int n, int64_t hidden, bool packed) {
    const int64_t panels = (hidden + kPanel - 1) / kPanel;
    p0 = packed ? id * panels / n : 0;
    p1 = packed ? (id + 1) * panels / n : panels;
    u0 = packed ? std::min(p0 * kPanel, hidden) : 0;
    u1 = packed ? std::min(p1 * kPanel, hidden) : hidden;
  }
};

// Hidden units per thread below which a second thread costs more than it saves (benchmarks/NOTES.md, two cores,
// two threads over one: at H = 64-128 the training step 0.88-0.99x but the forward pass 1.03-1.56x; at H = 256
// 0.85-0.91x and 0.56-0.58x).
constexpr int64_t kUnitsPerThread = 128;

// Runs job(id, n) on n threads when the team is free and n > 1, else job(0, 1) here.
void Parallel(int64_t hidden, bool packed, const std::function<void(int, int)>& job) {
  const int64_t most = std::max<int64_t>(1, hidden / kUnitsPerThread);
  const int n = packed ? static_cast<int>(std::min<int64_t>(g_threads.load(), most)) : 1;
  if (n <= 1 || !Team::Get().Run(n, job)) job(0, 1);
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

// One forward call: the inputs, outputs and scratch shared by its threads. wp: W_h packed as [G, P, H, 32]
// (or null: OpenBLAS on wh); q [B, G, hq] with hq = 32 P when packed, else H; hbuf: two carries [B, H], the
// step's input and output, swapped per step so that no thread writes what another's GEMM still reads.
// The input projection is either p [B, T, G*H] (from XLA) or, packed, computed per step from xs [B, T, I], wxp
// (W_x packed as [G, P, I, 32]) and bp (b as [G, 32 P]) into pq [B, G, hq], so that no [B, T, G*H] buffer exists.
template <typename T>
struct ForwardCall {
  int32_t cell;
  bool reverse;
  int64_t steps, batch, hidden;
  const T *p, *xs, *wh, *wp, *wxp, *bp, *bhn;
  int64_t inputs;
  const int32_t* lengths;
  T *hs, *c, *ws, *hprev, *q, *pq, *scratch, *hbuf;
  int64_t hq;

  JRNN_INLINE void Run(int id, int n) const {
    const int64_t H = hidden, G = Gates(cell), GH = G * H, KH = Stored(cell) * H, GQ = G * hq;
    const Units own(id, n, H, wp != nullptr);
    const int64_t u0 = own.u0, u1 = own.u1, nu = u1 - u0;
    const bool store = ws != nullptr;  // without a backward pass to come (inference), ws and hprev are not kept
    const int64_t hp = xs != nullptr ? hq : H;
    int sense = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = reverse ? steps - 1 - s : s;
      const T* hc = hbuf + (s & 1) * batch * H;  // h_{t-1}
      T* hn = hbuf + ((s + 1) & 1) * batch * H;  // h_t
      if (wp != nullptr) {
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t panel = own.p0; panel < own.p1; ++panel) {
            const int64_t at = g * hq + panel * kPanel, block = g * (hq / kPanel) + panel;
            if (xs != nullptr) {
              PanelGemm(batch, inputs, xs + t * inputs, steps * inputs, wxp + block * inputs * kPanel, pq + at, GQ,
                        kPanel, false, bp + at);
            }
            PanelGemm(batch, H, hc, H, wp + block * H * kPanel, q + at, GQ, kPanel, false);
          }
        }
      } else {
        Gemm(false, batch, GH, H, hc, H, wh, GH, T(0), q, GH);
      }
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t bt = b * steps + t;  // row b, step t of the batch-major arrays
        const T* __restrict pb = xs != nullptr ? pq + b * GQ : p + bt * GH;  // gate blocks hp apart
        const T* __restrict qb = q + b * GQ;
        T* __restrict out = hs + bt * H;
        T* __restrict w = store ? ws + (t * batch + b) * KH : scratch + b * KH;  // the gates, in place
        const T* __restrict hcb = hc + b * H;
        T* __restrict hnb = hn + b * H;
        if (store) std::memcpy(hprev + bt * H + u0, hcb + u0, sizeof(T) * nu);
        if (t >= lengths[b]) {
          std::memset(out + u0, 0, sizeof(T) * nu);
          for (int64_t k = 0; k < KH; k += H) std::memset(w + k + u0, 0, sizeof(T) * nu);
          std::memcpy(hnb + u0, hcb + u0, sizeof(T) * nu);
          continue;
        }
        if (cell == kElman) {  // w: h_t
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) w[j] = pb[j] + qb[j];
          TanhInPlace(w + u0, nu);
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) hnb[j] = out[j] = w[j];
        } else if (cell == kGru) {  // w: r, z, n, q_n
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            w[j] = pb[j] + qb[j];
            w[H + j] = pb[hp + j] + qb[hq + j];
          }
          SigmoidInPlace(w + u0, nu);
          SigmoidInPlace(w + H + u0, nu);
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            w[3 * H + j] = qb[2 * hq + j] + bhn[j];
            w[2 * H + j] = pb[2 * hp + j] + w[j] * w[3 * H + j];
          }
          TanhInPlace(w + 2 * H + u0, nu);
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            const T z = w[H + j], nn = w[2 * H + j];
            hnb[j] = out[j] = (T(1) - z) * nn + z * hcb[j];
          }
        } else {  // w: i, f, g, o, tanh(c_t), c_{t-1}
          T* __restrict cb = c + b * H;
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            w[j] = pb[j] + qb[j];
            w[H + j] = pb[hp + j] + qb[hq + j];
            w[2 * H + j] = pb[2 * hp + j] + qb[2 * hq + j];
            w[3 * H + j] = pb[3 * hp + j] + qb[3 * hq + j];
          }
          SigmoidInPlace(w + u0, nu);
          SigmoidInPlace(w + H + u0, nu);
          TanhInPlace(w + 2 * H + u0, nu);
          SigmoidInPlace(w + 3 * H + u0, nu);
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            w[5 * H + j] = cb[j];
            cb[j] = w[H + j] * cb[j] + w[j] * w[2 * H + j];
            w[4 * H + j] = cb[j];
          }
          TanhInPlace(w + 4 * H + u0, nu);
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) hnb[j] = out[j] = w[3 * H + j] * w[4 * H + j];
        }
      }
      if (n > 1) Team::Mine().Sync(sense);
    }
  }
};

// One backward call. wp: W_h^T packed as [P, G*H, 32] (or null: OpenBLAS on wh); dq_gru: two [B, G*H] buffers
// (GRU's dq differs from dp in the n block), swapped per step; dh_prev [B, H].
template <typename T>
struct BackwardCall {
  int32_t cell;
  bool reverse;
  int64_t steps, batch, hidden;
  const T *ws, *hprev, *wh, *wp;
  const int32_t* lengths;
  const T* dhs;
  T *dp, *dqn, *dh, *dc, *dq_gru, *dh_prev;

  JRNN_INLINE void Run(int id, int n) const {
    const int64_t H = hidden, GH = Gates(cell) * H, KH = Stored(cell) * H;
    const Units own(id, n, H, wp != nullptr);
    const int64_t u0 = own.u0, u1 = own.u1, nu = u1 - u0;
    int sense = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = reverse ? s : steps - 1 - s;
      // dq = dp (its rows steps * GH apart in dp [B, T, G*H]) but for GRU's n block
      T* dq = cell == kGru ? dq_gru + (s & 1) * batch * GH : dp + t * GH;
      const int64_t ldq = cell == kGru ? GH : steps * GH;
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t bt = b * steps + t;
        T* __restrict dpb = dp + bt * GH;
        T* __restrict dqb = dq + b * ldq;
        T* __restrict dnext = dh_prev + b * H;
        const T* __restrict dhb = dh + b * H;
        if (t >= lengths[b]) {  // a padded step passed the carry through: so does its gradient
          for (int64_t k = 0; k < GH; k += H) {
            std::memset(dpb + k + u0, 0, sizeof(T) * nu);
            if (cell == kGru) std::memset(dqb + k + u0, 0, sizeof(T) * nu);
          }
          if (cell == kGru) std::memset(dqn + bt * H + u0, 0, sizeof(T) * nu);
          std::memcpy(dnext + u0, dhb + u0, sizeof(T) * nu);
          continue;
        }
        const T* __restrict w = ws + (t * batch + b) * KH;
        const T* __restrict dy = dhs + bt * H;
        if (cell == kElman) {
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            const T g = dhb[j] + dy[j];
            dpb[j] = g * (T(1) - w[j] * w[j]);
            dnext[j] = T(0);
          }
        } else if (cell == kGru) {
          const T* __restrict hp = hprev + bt * H;
          T* __restrict dqnb = dqn + bt * H;
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
            const T g = dhb[j] + dy[j];
            const T r = w[j], z = w[H + j], nn = w[2 * H + j], qn = w[3 * H + j];
            const T dn = g * (T(1) - z) * (T(1) - nn * nn);
            const T dz = g * (hp[j] - nn) * z * (T(1) - z);
            const T dr = dn * qn * r * (T(1) - r);
            dpb[j] = dqb[j] = dr;
            dpb[H + j] = dqb[H + j] = dz;
            dpb[2 * H + j] = dn;
            dqb[2 * H + j] = dqnb[j] = dn * r;
            dnext[j] = g * z;
          }
        } else {
          T* __restrict dcb = dc + b * H;
          JRNN_IVDEP
          for (int64_t j = u0; j < u1; ++j) {
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
      if (n > 1) Team::Mine().Sync(sense);  // the GEMM reads every thread's dq
      if (wp != nullptr) {  // dh_{t-1}[:, own] += dq Wh^T[:, own]
        for (int64_t panel = own.p0; panel < own.p1; ++panel) {
          PanelGemm(batch, GH, dq, ldq, wp + panel * GH * kPanel, dh_prev + panel * kPanel, H,
                    std::min(kPanel, H - panel * kPanel), true);
        }
      } else {
        Gemm(true, batch, H, GH, dq, ldq, wh, GH, T(1), dh_prev, H);
      }
      for (int64_t b = 0; b < batch; ++b) std::memcpy(dh + b * H + u0, dh_prev + b * H + u0, sizeof(T) * nu);
    }
  }
};

// float32 is compiled for AVX-512, AVX2 and the baseline x86-64, picked at load time by the CPU (GCC's
// target_clones), as XLA compiles its own code for the host: the gate passes vectorize to the widest registers.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define JRNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define JRNN_CLONES
#endif

JRNN_CLONES void ForwardF32(const ForwardCall<float>& call, int id, int n) { call.Run(id, n); }
JRNN_CLONES void BackwardF32(const BackwardCall<float>& call, int id, int n) { call.Run(id, n); }

template <typename T>
JRNN_INLINE void Forward(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden, const T* p,
                         const T* xs, int64_t inputs, const T* wh, const T* wp, const T* wxp, const T* bp,
                         const T* bhn, const T* h0, const T* c0, const int32_t* lengths, T* hs, T* h, T* c, T* ws,
                         T* hprev) {
  const int64_t H = hidden, G = Gates(cell);
  const int64_t hq = wp != nullptr ? (H + kPanel - 1) / kPanel * kPanel : H;
  std::vector<T> q(batch * G * hq), pq(xs != nullptr ? batch * G * hq : 0);
  std::vector<T> scratch(ws != nullptr ? 0 : batch * Stored(cell) * H), hbuf(2 * batch * H);
  std::memcpy(hbuf.data(), h0, sizeof(T) * batch * H);
  std::memcpy(c, c0, sizeof(T) * batch * H);
  const ForwardCall<T> call{cell,    reverse,   steps,    batch,     hidden,         p,           xs,
                            wh,      wp,        wxp,      bp,        bhn,            inputs,      lengths,
                            hs,      c,         ws,       hprev,     q.data(),       pq.data(),   scratch.data(),
                            hbuf.data(), hq};
  Parallel(H, wp != nullptr, [&call](int id, int n) {
    if constexpr (std::is_same_v<T, float>) {
      ForwardF32(call, id, n);
    } else {
      call.Run(id, n);
    }
  });
  std::memcpy(h, hbuf.data() + (steps & 1) * batch * H, sizeof(T) * batch * H);
}

template <typename T>
JRNN_INLINE void Backward(int32_t cell, bool reverse, int64_t steps, int64_t batch, int64_t hidden, const T* ws,
                          const T* hprev, const T* wh, const T* wp, const int32_t* lengths, const T* dhs,
                          const T* dh_last, const T* dc_last, T* dp, T* dqn, T* dh, T* dc) {
  const int64_t H = hidden, GH = Gates(cell) * H;
  std::memcpy(dh, dh_last, sizeof(T) * batch * H);
  std::memcpy(dc, dc_last, sizeof(T) * batch * H);
  std::vector<T> dq_gru(cell == kGru ? 2 * batch * GH : 0), dh_prev(batch * H);
  const BackwardCall<T> call{cell, reverse, steps, batch, hidden, ws, hprev, wh, wp, lengths, dhs, dp, dqn, dh, dc,
                             dq_gru.data(), dh_prev.data()};
  Parallel(H, wp != nullptr, [&call](int id, int n) {
    if constexpr (std::is_same_v<T, float>) {
      BackwardF32(call, id, n);
    } else {
      call.Run(id, n);
    }
  });
}


ffi::Error CheckCell(int32_t cell, int64_t gh, int64_t hidden) {
  if (cell != kElman && cell != kGru && cell != kLstm) return ffi::Error::InvalidArgument("jrnn: unknown cell");
  if (gh != Gates(cell) * hidden) return ffi::Error::InvalidArgument("jrnn: p's last axis is not G*H");
  return ffi::Error::Success();
}

// wp: W_h packed for the AVX-512 GEMM (forward [G, P, H, 32], backward W_h^T as [P, G*H, 32]), or of size 0.
template <typename T>
const T* Packed(ffi::AnyBuffer wp) {
  return wp.element_count() > 0 ? wp.typed_data<T>() : nullptr;
}

ffi::Error ForwardImpl(ffi::AnyBuffer p, ffi::AnyBuffer xs, ffi::AnyBuffer wh, ffi::AnyBuffer wp, ffi::AnyBuffer wxp,
                       ffi::AnyBuffer bp, ffi::AnyBuffer bhn, ffi::AnyBuffer h0, ffi::AnyBuffer c0,
                       ffi::Buffer<ffi::S32> lengths, ffi::Result<ffi::AnyBuffer> hs, ffi::Result<ffi::AnyBuffer> h,
                       ffi::Result<ffi::AnyBuffer> c, ffi::Result<ffi::AnyBuffer> ws,
                       ffi::Result<ffi::AnyBuffer> hprev, int32_t cell, bool reverse) {
  auto dims = hs->dimensions();
  if (dims.size() != 3) return ffi::Error::InvalidArgument("jrnn: hs must be [B, T, H]");
  const int64_t batch = dims[0], steps = dims[1], hidden = wh.dimensions()[0];
  const int64_t gates = Gates(cell), panels = (hidden + kPanel - 1) / kPanel;
  const bool fused = xs.element_count() > 0, packed = wp.element_count() > 0;
  const auto count = [](ffi::AnyBuffer x) { return static_cast<int64_t>(x.element_count()); };
  if (auto error = CheckCell(cell, fused ? gates * hidden : p.dimensions().back(), hidden); error.failure()) {
    return error;
  }
  const int64_t inputs = fused ? xs.dimensions().back() : 0;
  if (packed && (wh.element_type() != ffi::F32 || !PackedSupported() || count(wp) != gates * panels * hidden * kPanel)) {
    return ffi::Error::InvalidArgument("jrnn: packed weights need float32, AVX-512 and the shape [G, P, H, 32]");
  }
  if (fused && (!packed || count(wxp) != gates * panels * inputs * kPanel || count(bp) != gates * panels * kPanel)) {
    return ffi::Error::InvalidArgument("jrnn: the fused projection needs packed W_h, W_x [G, P, I, 32], b [G, 32 P]");
  }
  const int32_t* len = lengths.typed_data();
  const bool store = ws->element_count() > 0;  // ws and hprev of size 0: the primal pass, nothing to keep
  switch (wh.element_type()) {
    case ffi::F32:
      Forward<float>(cell, reverse, steps, batch, hidden, fused ? nullptr : p.typed_data<float>(),
                     fused ? xs.typed_data<float>() : nullptr, inputs, wh.typed_data<float>(), Packed<float>(wp),
                     Packed<float>(wxp), Packed<float>(bp), bhn.typed_data<float>(), h0.typed_data<float>(),
                     c0.typed_data<float>(), len, hs->typed_data<float>(), h->typed_data<float>(),
                     c->typed_data<float>(), store ? ws->typed_data<float>() : nullptr, hprev->typed_data<float>());
      return ffi::Error::Success();
    case ffi::F64:
      Forward<double>(cell, reverse, steps, batch, hidden, p.typed_data<double>(), nullptr, 0, wh.typed_data<double>(),
                      nullptr, nullptr, nullptr, bhn.typed_data<double>(), h0.typed_data<double>(),
                      c0.typed_data<double>(), len, hs->typed_data<double>(), h->typed_data<double>(),
                      c->typed_data<double>(), store ? ws->typed_data<double>() : nullptr,
                      hprev->typed_data<double>());
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument("jrnn: the CPU kernel takes float32 or float64");
  }
}

ffi::Error BackwardImpl(ffi::AnyBuffer ws, ffi::AnyBuffer hprev, ffi::AnyBuffer wh, ffi::AnyBuffer wp,
                        ffi::Buffer<ffi::S32> lengths, ffi::AnyBuffer dhs, ffi::AnyBuffer dh_last,
                        ffi::AnyBuffer dc_last, ffi::Result<ffi::AnyBuffer> dp, ffi::Result<ffi::AnyBuffer> dqn,
                        ffi::Result<ffi::AnyBuffer> dh, ffi::Result<ffi::AnyBuffer> dc, int32_t cell, bool reverse) {
  auto dims = dp->dimensions();
  if (dims.size() != 3) return ffi::Error::InvalidArgument("jrnn: dp must be [B, T, G*H]");
  const int64_t batch = dims[0], steps = dims[1], hidden = wh.dimensions()[0];
  if (auto error = CheckCell(cell, dims[2], hidden); error.failure()) return error;
  if (wp.element_count() > 0 && (ws.element_type() != ffi::F32 || !PackedSupported() ||
                                 static_cast<int64_t>(wp.element_count()) != Gates(cell) * hidden * ((hidden + kPanel - 1) / kPanel) * kPanel)) {
    return ffi::Error::InvalidArgument("jrnn: packed weights need float32, AVX-512 and the shape [P, G*H, 32]");
  }
  const int32_t* len = lengths.typed_data();
  switch (ws.element_type()) {
    case ffi::F32:
      Backward<float>(cell, reverse, steps, batch, hidden, ws.typed_data<float>(), hprev.typed_data<float>(),
                      wh.typed_data<float>(), Packed<float>(wp), len, dhs.typed_data<float>(),
                      dh_last.typed_data<float>(), dc_last.typed_data<float>(), dp->typed_data<float>(),
                      dqn->typed_data<float>(), dh->typed_data<float>(), dc->typed_data<float>());
      return ffi::Error::Success();
    case ffi::F64:
      Backward<double>(cell, reverse, steps, batch, hidden, ws.typed_data<double>(), hprev.typed_data<double>(),
                       wh.typed_data<double>(), nullptr, len, dhs.typed_data<double>(), dh_last.typed_data<double>(),
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
                                  .Arg<ffi::AnyBuffer>()  // p [B, T, G*H], or [0]: fused
                                  .Arg<ffi::AnyBuffer>()  // xs [B, T, I] (fused) or [0]
                                  .Arg<ffi::AnyBuffer>()  // wh [H, G*H]
                                  .Arg<ffi::AnyBuffer>()  // wp [G, P, H, 32] or [0]
                                  .Arg<ffi::AnyBuffer>()  // wxp [G, P, I, 32] (fused) or [0]
                                  .Arg<ffi::AnyBuffer>()  // bp [G, 32 P] (fused) or [0]
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
                                  .Arg<ffi::AnyBuffer>()  // wp [P, G*H, 32] or [0]
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
// The threads of a packed (float32, AVX-512) call: the caller and threads - 1 workers of the team.
extern "C" void JrnnSetThreads(int threads) { g_threads.store(threads < 1 ? 1 : threads); }
extern "C" int JrnnGetThreads() { return g_threads.load(); }
// Whether this CPU runs the packed GEMM (AVX-512F); else the float32 steps go through OpenBLAS on one thread.
extern "C" int JrnnPackedSupported() { return PackedSupported() ? 1 : 0; }

// Fused CPU kernels for one TokenSelect decode step (float32, batch 1).
//
// The PyTorch path (select.py) is the reference; these do the same arithmetic in a few
// passes instead of ~100 small ATen calls. At 32K a decode step's real work is about a
// millisecond, and on a cold cache (every other layer ran in between) each extra op costs
// microseconds of dispatch, which is what these remove. Built on first use by kernels.py
// with the machine's own compiler; plain C ABI, called through ctypes, no torch headers.
// Built with -fno-trapping-math: without it gcc leaves the exp loops scalar (6x slower).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// e^x for x <= 0 (Cephes-style 2^f polynomial, |f| <= 0.5; relative error ~2e-7).
// Written so the compiler can vectorize the loops that call it.
inline float exp_nonpos(float x) {
    x = std::max(x, -87.0f);
    const float t = x * 1.44269504088896341f;
    const int32_t n = static_cast<int32_t>(t - 0.5f);  // round to nearest (t <= 0; truncation is toward 0)
    const float f = t - static_cast<float>(n);
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    bits += n * (1 << 23);
    std::memcpy(&p, &bits, sizeof bits);
    return p;
}

constexpr int64_t kAhead = 8;  // rows prefetched ahead in gathers

}  // namespace

extern "C" {

// Softmax numerators of one row: e[j] = exp(l[j] - mx), returns their sum. Separate in/out
// buffers: the in-place form of this loop is left scalar by gcc.
float exp_row(const float* __restrict l, float* __restrict e, int64_t m, float mx) {
    float z = 0.0f;
#pragma omp simd reduction(+ : z)
    for (int64_t j = 0; j < m; ++j) {
        const float v = exp_nonpos(l[j] - mx);
        e[j] = v;
        z += v;
    }
    return z;
}

// Soft vote from int8 scoring: score[j] = sum_r softmax_j(acc[r, j] * qs[r] * ks[h(r), j]),
// h(r) = r / G. acc [R, M] int32 (row-major), ks rows of length M at stride ks_stride.
// work holds 2 * M floats.
void sg_vote_int8(const int32_t* acc, const float* qs, const float* ks, int64_t ks_stride, int64_t n_kv,
                  int64_t groups, int64_t m, float* work, float* score) {
    std::fill(score, score + m, 0.0f);
    float* __restrict l = work;
    float* __restrict e = work + m;
    for (int64_t r = 0; r < n_kv * groups; ++r) {
        const int32_t* __restrict a = acc + r * m;
        const float* __restrict s = ks + (r / groups) * ks_stride;
        const float q = qs[r];
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < m; ++j) {
            const float v = static_cast<float>(a[j]) * q * s[j];
            l[j] = v;
            mx = std::max(mx, v);
        }
        const float inv = 1.0f / exp_row(l, e, m, mx);
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) score[j] += e[j] * inv;
    }
}

// Max-pool (odd width, stride 1, same padding) of score into work when pool > 1, then the
// indices of the k largest values in ascending order (plus offset) into out. Ties at the
// k-th value are taken in index order. work holds 2 * m floats.
void sg_pool_topk(const float* score, int64_t m, int64_t pool, int64_t k, int64_t offset, float* work,
                  int64_t* out) {
    const float* s = score;
    if (pool > 1) {
        float* p = work + m;
        const int64_t r = pool / 2;
        std::copy(score, score + m, p);
        for (int64_t o = 1; o <= r; ++o) {
            for (int64_t j = 0; j + o < m; ++j) p[j] = std::max(p[j], score[j + o]);
            for (int64_t j = o; j < m; ++j) p[j] = std::max(p[j], score[j - o]);
        }
        s = p;
    }
    k = std::min(k, m);
    if (k <= 0) return;
    std::copy(s, s + m, work);
    std::nth_element(work, work + (k - 1), work + m, std::greater<float>());
    const float kth = work[k - 1];
    int64_t above = 0;
    for (int64_t j = 0; j < m; ++j) above += s[j] > kth;
    int64_t ties = k - above, n = 0;
    for (int64_t j = 0; j < m && n < k; ++j) {
        if (s[j] > kth || (s[j] == kth && ties-- > 0)) out[n++] = j + offset;
    }
}

// The selected middle keys moved to compact positions n_init + j: key row p = idx[j] of
// every KV head rotated by (n_init + j - p), value row copied. cos_t / sin_t: [>= max|o|, d/2]
// tables of cos/sin(o * inv_freq). Rows are d contiguous floats; heads at the given strides.
void sg_gather_rotate(const float* key, const float* value, int64_t kv_head_stride, const int64_t* idx,
                      int64_t m, int64_t n_kv, int64_t d, const float* cos_t, const float* sin_t, int64_t n_init,
                      float* out_k, float* out_v, int64_t out_head_stride) {
    const int64_t h2 = d / 2;
    for (int64_t h = 0; h < n_kv; ++h) {
        const float* kh = key + h * kv_head_stride;
        const float* vh = value + h * kv_head_stride;
        float* ok = out_k + h * out_head_stride + n_init * d;
        float* ov = out_v + h * out_head_stride + n_init * d;
        for (int64_t j = 0; j < m; ++j) {
            if (j + kAhead < m) {  // scattered rows: ask for the ones a few steps ahead while rotating this one
                const int64_t pa = idx[j + kAhead];
                for (int64_t b = 0; b < d * 4; b += 64) {
                    __builtin_prefetch(reinterpret_cast<const char*>(kh + pa * d) + b);
                    __builtin_prefetch(reinterpret_cast<const char*>(vh + pa * d) + b);
                }
            }
            const int64_t p = idx[j];
            const int64_t o = n_init + j - p;
            const int64_t a = o < 0 ? -o : o;
            const float sg = o < 0 ? -1.0f : 1.0f;
            const float* c = cos_t + a * h2;
            const float* sn = sin_t + a * h2;
            const float* x = kh + p * d;
            float* y = ok + j * d;
            for (int64_t f = 0; f < h2; ++f) {
                const float x1 = x[f], x2 = x[f + h2], cf = c[f], sf = sg * sn[f];
                y[f] = x1 * cf - x2 * sf;
                y[f + h2] = x2 * cf + x1 * sf;
            }
            std::memcpy(ov + j * d, vh + p * d, d * sizeof(float));
        }
    }
}

// One decode query per head over two key blocks, each read by its own query (q1 / q2, [Hq, d]):
// softmax over the concatenated logits, out [Hq, d]. Block i has h_i heads (query head hq
// reads head hq / (Hq / h_i)), s_i rows of d floats, heads at stride hs_i. Each key and
// value row is loaded once for all the query heads that share it. work: 2 Hq (s1 + s2) floats.
void sg_attend2(const float* q1, const float* k1, const float* v1, int64_t h1, int64_t s1, int64_t hs1,
                const float* q2, const float* k2, const float* v2, int64_t h2, int64_t s2, int64_t hs2,
                int64_t hq, int64_t d, float scaling, float* work, float* out) {
    const int64_t n = s1 + s2;
    float* __restrict lg = work;  // [hq, n] logits, then softmax numerators
    const float* qs[2] = {q1, q2};
    const float* ks[2] = {k1, k2};
    const float* vs[2] = {v1, v2};
    const int64_t hs[2] = {h1, h2}, ns[2] = {s1, s2}, st[2] = {hs1, hs2}, off[2] = {0, s1};
    for (int b = 0; b < 2; ++b) {
        const int64_t g = hq / hs[b];
        for (int64_t h = 0; h < hs[b]; ++h) {
            const float* kb = ks[b] + h * st[b];
            for (int64_t j = 0; j < ns[b]; ++j) {
                const float* __restrict kr = kb + j * d;
                for (int64_t r = 0; r < g; ++r) {
                    const float* __restrict q = qs[b] + (h * g + r) * d;
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int64_t t = 0; t < d; ++t) acc += q[t] * kr[t];
                    lg[(h * g + r) * n + off[b] + j] = acc * scaling;
                }
            }
        }
    }
    float* __restrict e = work + hq * n;
    for (int64_t h = 0; h < hq; ++h) {
        float* row = lg + h * n;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
        const float inv = 1.0f / exp_row(row, e + h * n, n, mx);
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) e[h * n + j] *= inv;
        std::fill(out + h * d, out + (h + 1) * d, 0.0f);
    }
    for (int b = 0; b < 2; ++b) {
        const int64_t g = hq / hs[b];
        for (int64_t h = 0; h < hs[b]; ++h) {
            const float* vb = vs[b] + h * st[b];
            for (int64_t j = 0; j < ns[b]; ++j) {
                const float* __restrict vr = vb + j * d;
                for (int64_t r = 0; r < g; ++r) {
                    float* __restrict o = out + (h * g + r) * d;
                    const float w = e[(h * g + r) * n + off[b] + j];
#pragma omp simd
                    for (int64_t t = 0; t < d; ++t) o[t] += w * vr[t];
                }
            }
        }
    }
}

}  // extern "C"

// Fused CPU kernels for TokenSelect decode steps and prefill chunks (float32, batch 1).
//
// The PyTorch path (select.py) is the reference; these do the same arithmetic in a few
// passes instead of ~100 small ATen calls. At 32K a decode step's real work is about a
// millisecond, and on a cold cache (every other layer ran in between) each extra op costs
// microseconds of dispatch, which is what these remove. Built on first use by kernels.py
// with the machine's own compiler; plain C ABI, called through ctypes, no torch headers.
// Built with -fno-trapping-math: without it gcc leaves the exp loops scalar (6x slower).
// Where the result must match PyTorch bit for bit (the int8 scoring buffer, rotations),
// the function is built without fused multiply-add.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SG_VNNI 1
#endif

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

// Symmetric int8 of one row, as select.quantize_rows: scale = max(max|x|, 1e-12) / 127,
// q = round-half-even(x / scale). Returns the scale.
inline float quantize_row(const float* __restrict x, int64_t d, int8_t* __restrict q) {
    float mx = 0.0f;
    for (int64_t t = 0; t < d; ++t) mx = std::max(mx, std::fabs(x[t]));
    const float scale = std::max(mx, 1e-12f) / 127.0f;
    for (int64_t t = 0; t < d; ++t) q[t] = static_cast<int8_t>(std::nearbyint(x[t] / scale));
    return scale;
}

// y = R(-a) x for one row (rotate-half convention) from the table rows c = cos(a), sn = sin(a).
// No fused multiply-add: the same bits as select.rotate_into with (cos, -sin).
__attribute__((optimize("fp-contract=off"))) void rotate_back(const float* __restrict x, const float* c,
                                                              const float* sn, int64_t h2, float* __restrict y) {
    for (int64_t f = 0; f < h2; ++f) {
        const float x1 = x[f], x2 = x[f + h2], cf = c[f], sf = -sn[f];
        y[f] = x1 * cf - x2 * sf;
        y[f + h2] = x2 * cf + x1 * sf;
    }
}

// Order-preserving unsigned key of a float (larger float, larger key).
inline uint32_t order_key(float x) {
    uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The k-th largest of s[0, m) (1 <= k <= m) by radix selection on order_key: three histogram
// passes of 11/11/10 bits over the values still matching the prefix found so far (a copy plus
// nth_element cost ~3x more at 32K). *ties: how many values equal to it belong to the top k.
inline float kth_largest(const float* s, int64_t m, int64_t k, int64_t* ties) {
    static constexpr int kShift[3] = {21, 10, 0}, kBits[3] = {11, 11, 10};
    uint32_t prefix = 0, mask = 0;
    std::vector<int64_t> hist(1 << 11);
    for (int pass = 0; pass < 3; ++pass) {
        const int sh = kShift[pass];
        const uint32_t bins = (1u << kBits[pass]) - 1;
        std::fill(hist.begin(), hist.end(), 0);
        for (int64_t j = 0; j < m; ++j) {
            const uint32_t u = order_key(s[j]);
            if ((u & mask) == prefix) ++hist[(u >> sh) & bins];
        }
        uint32_t b = bins;
        while (k > hist[b]) k -= hist[b--];
        prefix |= b << sh;
        mask |= bins << sh;
    }
    *ties = k;
    const uint32_t bits = (prefix & 0x80000000u) ? (prefix & 0x7FFFFFFFu) : ~prefix;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

#ifdef SG_VNNI
// Lane sums of 16 vectors: out[i] = sum of the 16 int32 lanes of v[i] (a transpose-and-add
// tree, ~3 instructions per sum instead of a full horizontal reduction each).
inline __m512i sum16(const __m512i* v) {
    __m512i x[8], y[4];
    for (int i = 0; i < 8; ++i)
        x[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i)
        y[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(x[2 * i], x[2 * i + 1]),
                                _mm512_unpackhi_epi64(x[2 * i], x[2 * i + 1]));
    const __m512i z0 = _mm512_add_epi32(_mm512_shuffle_i32x4(y[0], y[1], 0x44), _mm512_shuffle_i32x4(y[0], y[1], 0xEE));
    const __m512i z1 = _mm512_add_epi32(_mm512_shuffle_i32x4(y[2], y[3], 0x44), _mm512_shuffle_i32x4(y[2], y[3], 0xEE));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(z0, z1, 0x88), _mm512_shuffle_i32x4(z0, z1, 0xDD));
}
#endif

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

// Integer logits of the scoring rows against int8 keys, as select.int8_logits: q [n_kv * G, d]
// float rows (row r reads KV head r / G) are quantized per row (scales into qs), and
// acc[r, j] = sum_t qi[r, t] * key[h(r), j, t] for the m key rows of each head (rows of d int8
// at head stride head_stride). With AVX512-VNNI and d % 64 == 0, 16 keys at a time: the
// unsigned-by-signed dot product reads key ^ 0x80 = key + 128, so 128 * sum(qi) comes off.
void sg_score_int8(const float* q, const int8_t* keys, int64_t head_stride, int64_t n_kv, int64_t groups,
                   int64_t m, int64_t d, float* qs, int32_t* acc) {
    std::vector<int8_t> qi(n_kv * groups * d);
    for (int64_t r = 0; r < n_kv * groups; ++r) qs[r] = quantize_row(q + r * d, d, qi.data() + r * d);
    for (int64_t h = 0; h < n_kv; ++h) {
        const int8_t* kh = keys + h * head_stride;
        int64_t j0 = 0;
#ifdef SG_VNNI
        if (d % 64 == 0 && groups <= 8) {
            // key tiles outer, query rows inner: each head's keys stream from memory once
            const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
            __m512i corr[8];
            for (int64_t g = 0; g < groups; ++g) {
                const int8_t* qr = qi.data() + (h * groups + g) * d;
                int32_t qsum = 0;
                for (int64_t t = 0; t < d; ++t) qsum += qr[t];
                corr[g] = _mm512_set1_epi32(128 * qsum);
            }
            for (j0 = 0; j0 + 16 <= m; j0 += 16) {
                const int8_t* tile = kh + j0 * d;
                for (int64_t b = 0; b < 16 * d; b += 64) __builtin_prefetch(tile + 4 * 16 * d + b);
                for (int64_t g = 0; g < groups; ++g) {
                    const int8_t* qr = qi.data() + (h * groups + g) * d;
                    __m512i v[16];
                    for (int i = 0; i < 16; ++i) {
                        const int8_t* kr = tile + i * d;
                        __m512i a = _mm512_setzero_si512();
                        for (int64_t c = 0; c < d; c += 64)
                            a = _mm512_dpbusd_epi32(a, _mm512_xor_si512(_mm512_loadu_si512(kr + c), flip),
                                                    _mm512_loadu_si512(qr + c));
                        v[i] = a;
                    }
                    _mm512_storeu_si512(acc + (h * groups + g) * m + j0, _mm512_sub_epi32(sum16(v), corr[g]));
                }
            }
        }
#endif
        for (int64_t r = h * groups; r < (h + 1) * groups; ++r) {
            const int8_t* qr = qi.data() + r * d;
            for (int64_t j = j0; j < m; ++j) {
                const int8_t* kr = kh + j * d;
                int32_t a = 0;
                for (int64_t t = 0; t < d; ++t) a += static_cast<int32_t>(qr[t]) * kr[t];
                acc[r * m + j] = a;
            }
        }
    }
}

// New keys into the int8 scoring buffer, as attention._sync_buffer: key rows p in [lo, hi) of
// every KV head rotated back by -p (cos_t / sin_t: [>= hi, d/2] position tables), then quantized
// per row into kbuf (row p at head stride kb_stride) with their scales into kscale; bit-identical
// to the PyTorch path's buffer.
void sg_sync_int8(const float* key, int64_t key_head_stride, int64_t n_kv, int64_t lo, int64_t hi, int64_t d,
                  const float* cos_t, const float* sin_t, int8_t* kbuf, int64_t kb_stride, float* kscale,
                  int64_t ks_stride) {
    const int64_t h2 = d / 2;
    std::vector<float> y(d);
    for (int64_t h = 0; h < n_kv; ++h) {
        for (int64_t p = lo; p < hi; ++p) {
            rotate_back(key + h * key_head_stride + p * d, cos_t + p * h2, sin_t + p * h2, h2, y.data());
            kscale[h * ks_stride + p] = quantize_row(y.data(), d, kbuf + h * kb_stride + p * d);
        }
    }
}

// Max-pool (odd width, stride 1, same padding) of s into out: out[j] = max s[j - r .. j + r]
// clipped to [0, m), by doubling windows (log2(pool) + 1 passes instead of pool - 1).
static void max_pool(const float* s, int64_t m, int64_t pool, float* out) {
    const int64_t r = pool / 2, len = m + 2 * r;
    thread_local std::vector<float> e;
    e.assign(len, -INFINITY);
    std::copy(s, s + m, e.begin() + r);
    float* x = e.data();
    int64_t w = 1;
    while (2 * w <= pool) {  // x[i] = max e[i, i + 2w) (clipped at len, where e would be -inf anyway)
        for (int64_t i = 0; i + w < len; ++i) x[i] = std::max(x[i], x[i + w]);
        w *= 2;
    }
    for (int64_t j = 0; j < m; ++j) out[j] = std::max(x[j], x[j + pool - w]);  // [j, j + w) U [j + pool - w, j + pool)
}

// Indices of the k largest of s[0, m) in ascending order (plus offset) into out; ties at the
// k-th value are taken in index order. A threshold from a 1-in-32 sample keeps ~1.5k
// candidates in one branchless pass, and the exact k-th value is found among them; if the
// sample misjudged (fewer than k candidates), radix selection over all m.
static void top_k(const float* s, int64_t m, int64_t k, int64_t offset, int64_t* out) {
    constexpr int64_t kStride = 32;
    thread_local std::vector<float> vals;
    thread_local std::vector<int32_t> cand;
    if (m >= 64 * kStride && 8 * k <= m) {
        vals.clear();
        for (int64_t j = 0; j < m; j += kStride) vals.push_back(s[j]);
        const int64_t ns = static_cast<int64_t>(vals.size());
        const double expect = static_cast<double>(k) * ns / m;
        const int64_t rank = static_cast<int64_t>(expect + 3.0 * std::sqrt(expect) + 4.0);
        if (rank < ns) {
            std::nth_element(vals.begin(), vals.begin() + rank, vals.end(), std::greater<float>());
            const float t = vals[rank];
            cand.resize(m);
            int64_t n = 0;
            for (int64_t j = 0; j < m; ++j) {
                cand[n] = static_cast<int32_t>(j);
                n += s[j] >= t;
            }
            if (n >= k) {  // every value >= the k-th largest is a candidate
                vals.resize(n);
                for (int64_t i = 0; i < n; ++i) vals[i] = s[cand[i]];
                std::nth_element(vals.begin(), vals.begin() + (k - 1), vals.end(), std::greater<float>());
                const float kth = vals[k - 1];
                int64_t ties = k;
                for (int64_t i = 0; i < n; ++i) ties -= s[cand[i]] > kth;
                int64_t o = 0;
                for (int64_t i = 0; i < n && o < k; ++i) {
                    const float v = s[cand[i]];
                    if (v > kth || (v == kth && ties-- > 0)) out[o++] = cand[i] + offset;
                }
                return;
            }
        }
    }
    int64_t ties = 0;
    const float kth = kth_largest(s, m, k, &ties);
    int64_t o = 0;
    for (int64_t j = 0; j < m && o < k; ++j) {
        if (s[j] > kth || (s[j] == kth && ties-- > 0)) out[o++] = j + offset;
    }
}

// Max-pool when pool > 1 (into work), then top_k. work holds 2 * m floats.
void sg_pool_topk(const float* score, int64_t m, int64_t pool, int64_t k, int64_t offset, float* work,
                  int64_t* out) {
    const float* s = score;
    if (pool > 1) {
        max_pool(score, m, pool, work + m);
        s = work + m;
    }
    k = std::min(k, m);
    if (k > 0) top_k(s, m, k, offset, out);
}

// The whole decode-step selection from the int8 scoring buffer in one call: sg_score_int8 of the
// query rows q (scaled by scaling first, as select.score_rows), sg_vote_int8, sg_pool_topk.
// work: 4 * (R * m + 3 * m + R) bytes, R = n_kv * groups.
void sg_select_int8(const float* q, float scaling, const int8_t* keys, int64_t head_stride, int64_t n_kv,
                    int64_t groups, int64_t m, int64_t d, const float* ks, int64_t ks_stride, int64_t k,
                    int64_t offset, int64_t pool, void* work, int64_t* out) {
    const int64_t r = n_kv * groups;
    int32_t* acc = static_cast<int32_t*>(work);
    float* qs = reinterpret_cast<float*>(acc + r * m);
    float* tmp = qs + r;
    float* score = tmp + 2 * m;
    std::vector<float> rows(r * d);
    for (int64_t i = 0; i < r * d; ++i) rows[i] = q[i] * scaling;
    sg_score_int8(rows.data(), keys, head_stride, n_kv, groups, m, d, qs, acc);
    sg_vote_int8(acc, qs, ks, ks_stride, n_kv, groups, m, tmp, score);
    sg_pool_topk(score, m, pool, k, offset, tmp, out);
}

// Rows of x rotated back by one position pos (out = R(-pos) x, the rotate-half convention):
// heads x rows rows of d floats, row (h, i) at x + h * x_hs + i * x_rs, written to
// out + h * o_hs + i * o_rs. Bit-identical to the PyTorch path.
void sg_unrotate_rows(const float* x, int64_t heads, int64_t x_hs,
        int64_t rows, int64_t x_rs, int64_t d, const float* cos_t, const float* sin_t, int64_t pos, float* out,
        int64_t o_hs, int64_t o_rs) {
    const int64_t h2 = d / 2;
    const float* c = cos_t + pos * h2;
    const float* sn = sin_t + pos * h2;
    for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < rows; ++i) rotate_back(x + h * x_hs + i * x_rs, c, sn, h2, out + h * o_hs + i * o_rs);
    }
}

// Prefill chunk fingerprint: out[h] = mean over i of R(-(pos0 + i)) x[h, i] (each query rotated
// back by its own position), accumulated in double; rows as in sg_unrotate_rows, out [heads, d].
void sg_unrotate_mean(const float* x, int64_t heads, int64_t x_hs, int64_t rows, int64_t x_rs, int64_t d,
                      const float* cos_t, const float* sin_t, int64_t pos0, float* out) {
    const int64_t h2 = d / 2;
    std::vector<double> acc(d);
    std::vector<float> y(d);
    for (int64_t h = 0; h < heads; ++h) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t i = 0; i < rows; ++i) {
            rotate_back(x + h * x_hs + i * x_rs, cos_t + (pos0 + i) * h2, sin_t + (pos0 + i) * h2, h2, y.data());
            for (int64_t t = 0; t < d; ++t) acc[t] += y[t];
        }
        for (int64_t t = 0; t < d; ++t) out[h * d + t] = static_cast<float>(acc[t] / rows);
    }
}

// The selected middle keys moved to compact positions n_init + j: key row p = idx[j] of
// every KV head rotated by (n_init + j - p), value row copied. cos_t / sin_t: [>= max|o|, d/2]
// tables of cos/sin(o * inv_freq). Rows are d contiguous floats; heads at the given strides.
void sg_gather_rotate(const float* key, const float* value, int64_t kv_head_stride, const int64_t* idx,
                      int64_t m, int64_t n_kv, int64_t d, const float* cos_t, const float* sin_t, int64_t n_init,
                      float* out_k, float* out_v, int64_t out_head_stride) {
    const int64_t h2 = d / 2;
    for (int64_t j = 0; j < m; ++j) {
        if (j + kAhead < m) {  // scattered rows: ask for the ones a few steps ahead (all heads) while rotating these
            const int64_t pa = idx[j + kAhead];
            for (int64_t h = 0; h < n_kv; ++h) {
                for (int64_t b = 0; b < d * 4; b += 64) {
                    __builtin_prefetch(reinterpret_cast<const char*>(key + h * kv_head_stride + pa * d) + b);
                    __builtin_prefetch(reinterpret_cast<const char*>(value + h * kv_head_stride + pa * d) + b);
                }
            }
        }
        const int64_t p = idx[j];
        const int64_t o = n_init + j - p;
        const int64_t a = o < 0 ? -o : o;
        const float sg = o < 0 ? -1.0f : 1.0f;
        const float* c = cos_t + a * h2;
        const float* sn = sin_t + a * h2;
        for (int64_t h = 0; h < n_kv; ++h) {
            const float* x = key + h * kv_head_stride + p * d;
            float* y = out_k + h * out_head_stride + (n_init + j) * d;
            for (int64_t f = 0; f < h2; ++f) {
                const float x1 = x[f], x2 = x[f + h2], cf = c[f], sf = sg * sn[f];
                y[f] = x1 * cf - x2 * sf;
                y[f + h2] = x2 * cf + x1 * sf;
            }
            std::memcpy(out_v + h * out_head_stride + (n_init + j) * d, value + h * kv_head_stride + p * d,
                        d * sizeof(float));
        }
    }
}

// Cosine similarity of two float vectors, accumulated in double; dot / sqrt(|a|^2 |b|^2) is exactly
// 1 for identical vectors (sqrt(x * x) == x in IEEE arithmetic), so threshold 1.0 means "unchanged".
double sg_cosine(const float* a, const float* b, int64_t n) {
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        ab += static_cast<double>(a[i]) * b[i];
        aa += static_cast<double>(a[i]) * a[i];
        bb += static_cast<double>(b[i]) * b[i];
    }
    return ab / std::max(std::sqrt(aa * bb), 1e-300);
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

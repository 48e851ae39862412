// conv2d.cu: 2-D convolution (cross-correlation), NCHW, float and double.
//
//   y[n, o, oy, ox] = b[o] + sum_{c < Cg, i < kh, j < kw}
//                     x~[n, g*Cg + c, oy*sh - pt + i*dh, ox*sw - pl + j*dw] * w[o, c, i, j]
//   g = o / (Cout/G), Cg = C/G; x~ is x extended by the padding mode PAD
//   (zeros, reflect, replicate, circular: pad_index in fastconv_common.cuh).
//
// Layouts: x (N, C, H, W), w (Cout, C/G, kh, kw), b (Cout,), y (N, Cout, Ho, Wo), all
// C-contiguous, one dtype T (float or double), accumulation in T.
// FLOPs: 2 * N*Cout*Ho*Wo * Cg*kh*kw (+ N*Cout*Ho*Wo for the bias).
// Minimum bytes: sizeof(T) * (N*C*H*W + Cout*Cg*kh*kw + Cout + N*Cout*Ho*Wo).
// Offsets into x, y and the im2col workspace are 64-bit (i64).
// Register budget: every kernel states a minimum number of resident blocks in its
// __launch_bounds__ (<= 128 registers per thread); without it ptxas 13.0 picked
// 40-64 registers for sm_90 and spilled (tests/test_cu_compile.py checks: no spills).
//
// Kernels (kernel names carry their specialization, e.g.
// conv2d_direct<float, 1, 16, 8, 2, 4, 4096>):
//
// v1  conv2d_direct<T, PAD, BX, BY, RW, COB, PATCH_CAP>  ("direct")
//     Block (BX, BY) threads computes an output tile of BY rows x BX*RW columns for
//     COB output channels of one image; grid.x = tiles_w * tiles_h * G * ceil(Cog/COB),
//     grid.y strides over the batch.  Per input channel of the group the block stages
//     the input patch the tile reads ((BY-1)*sh + (kh-1)*dh + 1 rows by
//     (BX*RW-1)*sw + (kw-1)*dw + 1 columns, padding applied while loading) and the
//     COB*kh*kw weights in shared memory; each thread then accumulates a register
//     block of COB channels x RW columns (columns tx + r*BX: coalesced stores).
//     Shared memory: (PATCH_CAP + COB*WCAP) * sizeof(T) (WCAP = 128 taps).  The host
//     uses it only when the patch fits PATCH_CAP and kh*kw <= WCAP.
//
// v2  conv2d_im2col<T, PAD> + conv2d_gemm<T, VECA, VECB>  ("im2col")
//     im2col writes, for a chunk of nb images, cols[g, k, n*P + p] (k = (c, i, j),
//     p = oy*Wo + ox, P = Ho*Wo): a (G, Cg*kh*kw, nb*P) workspace, one thread per
//     element (grid-stride).  The GEMM computes, per group (grid.z),
//     Y[g] (Cog x nb*P) = W[g] (Cog x K) * cols[g] (K x nb*P) with BM x BN = 64 x 64
//     block tiles, BK = 16, 256 threads each holding a 4 x 4 register block (rows
//     ty + 16*i, columns tx + 16*j), operand tiles staged in shared memory
//     ((BK*(BM+1) + BK*BN) * sizeof(T): 8.3 KB float, 16.5 KB double) and loaded with
//     VECA/VECB-wide vector loads where the host found the rows aligned (K % VECA == 0,
//     nb*P % VECB == 0).  The epilogue adds the bias and scatters columns back to NCHW.
//     The host caps the workspace and loops over batch chunks.
//
// v3  conv2d_implicit_gemm<T, PAD, VECA>  ("implicit-gemm")
//     The v2 GEMM over all N*P columns, whose B-tile loads gather x~ directly (the
//     im2col entries on the fly), so no workspace: cuDNN's IMPLICIT_GEMM.  Each thread
//     always loads the same tile column, so its (image, oy, ox) decode happens once per
//     block.
#include "fastconv_common.cuh"

// ------------------------------------------------------------------------------
// v1: direct, shared-memory tiled, register-blocked
// ------------------------------------------------------------------------------
#define FC_DIRECT_WCAP 128

template <typename T, int PAD, int BX, int BY, int RW, int COB, int PATCH_CAP>
__global__ void __launch_bounds__(BX * BY, 4)
conv2d_direct(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
              T* __restrict__ y, int N, int C, int H, int W, int Cout, int kh, int kw,
              int Ho, int Wo, int sh, int sw, int pt, int pl, int dh, int dw, int groups,
              int has_bias, int tiles_w, int tiles_h, int patch_h, int patch_w) {
    __shared__ T patch[PATCH_CAP];
    __shared__ T wsh[COB * FC_DIRECT_WCAP];

    const int cg = C / groups, cog = Cout / groups;
    const int cob_blocks = (cog + COB - 1) / COB;
    int b = blockIdx.x;
    const int tw = b % tiles_w;  b /= tiles_w;
    const int th = b % tiles_h;  b /= tiles_h;
    const int cb = b % cob_blocks;
    const int g = b / cob_blocks;
    const int oc0 = g * cog + cb * COB;
    const int n_oc = min(COB, cog - cb * COB);
    const int oy0 = th * BY, ox0 = tw * BX * RW;
    const int iy0 = oy0 * sh - pt, ix0 = ox0 * sw - pl;  // patch origin in x coordinates
    const int taps = kh * kw;
    const int tid = threadIdx.y * BX + threadIdx.x;
    const int oy = oy0 + threadIdx.y;

    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        T acc[COB][RW];
#pragma unroll
        for (int o = 0; o < COB; ++o)
#pragma unroll
            for (int r = 0; r < RW; ++r) acc[o][r] = T(0);

        for (int c = 0; c < cg; ++c) {
            const T* xc = x + ((i64)n * C + g * cg + c) * H * W;
            for (int e = tid; e < patch_h * patch_w; e += BX * BY) {
                const int py = e / patch_w, px = e - py * patch_w;
                const int iy = pad_index<PAD>(iy0 + py, H);
                const int ix = pad_index<PAD>(ix0 + px, W);
                // Positions only tile overrun (oy >= Ho, ox >= Wo) reads can map outside
                // [0, H) x [0, W) (e.g. reflect far past the edge): load zeros there.
                const bool inside = iy >= 0 && ix >= 0 && iy < H && ix < W;
                patch[e] = inside ? __ldg(xc + (i64)iy * W + ix) : T(0);
            }
            for (int e = tid; e < COB * taps; e += BX * BY) {
                const int o = e / taps, t = e - o * taps;
                wsh[o * FC_DIRECT_WCAP + t] =
                    o < n_oc ? __ldg(w + ((i64)(oc0 + o) * cg + c) * taps + t) : T(0);
            }
            __syncthreads();  // patch and weights of channel c complete before use

            for (int i = 0; i < kh; ++i) {
                const T* prow = patch + (threadIdx.y * sh + i * dh) * patch_w;
                for (int j = 0; j < kw; ++j) {
                    T v[RW];
#pragma unroll
                    for (int r = 0; r < RW; ++r)
                        v[r] = prow[(threadIdx.x + r * BX) * sw + j * dw];
#pragma unroll
                    for (int o = 0; o < COB; ++o) {
                        const T wv = wsh[o * FC_DIRECT_WCAP + i * kw + j];
#pragma unroll
                        for (int r = 0; r < RW; ++r) acc[o][r] += v[r] * wv;
                    }
                }
            }
            __syncthreads();  // every thread done reading before channel c+1 overwrites
        }

        if (oy < Ho) {
#pragma unroll
            for (int o = 0; o < COB; ++o) {
                if (o >= n_oc) break;
                const T bo = has_bias ? bias[oc0 + o] : T(0);
                T* yrow = y + (((i64)n * Cout + oc0 + o) * Ho + oy) * Wo;
#pragma unroll
                for (int r = 0; r < RW; ++r) {
                    const int ox = ox0 + threadIdx.x + r * BX;
                    if (ox < Wo) yrow[ox] = acc[o][r] + bo;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------
// v2: im2col
// ------------------------------------------------------------------------------
// cols[g, k, col]: (G, K, nb*P), k = (c*kh + i)*kw + j, col = n*P + oy*Wo + ox,
// for the nb images starting at x (the host passes the chunk's slice).
template <typename T, int PAD>
__global__ void __launch_bounds__(256, 2)
conv2d_im2col(const T* __restrict__ x, T* __restrict__ cols, int nb, int C, int H, int W,
              int kh, int kw, int Ho, int Wo, int sh, int sw, int pt, int pl, int dh, int dw,
              int groups) {
    const int cg = C / groups, taps = kh * kw, K = cg * taps;
    const i64 P = (i64)Ho * Wo, ncols = nb * P;
    const i64 total = (i64)groups * K * ncols;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const i64 col = e % ncols;
        const i64 row = e / ncols;             // g*K + k
        const int k = (int)(row % K), g = (int)(row / K);
        const int n = (int)(col / P);
        const int p = (int)(col - n * P);
        const int oy = p / Wo, ox = p - oy * Wo;
        const int c = k / taps, t = k - c * taps;
        const int i = t / kw, j = t - i * kw;
        const int iy = pad_index<PAD>(oy * sh - pt + i * dh, H);
        const int ix = pad_index<PAD>(ox * sw - pl + j * dw, W);
        cols[e] = (iy >= 0 && ix >= 0)
                      ? __ldg(x + (((i64)n * C + g * cg + c) * H + iy) * W + ix)
                      : T(0);
    }
}

// ------------------------------------------------------------------------------
// GEMM machinery shared by v2 and v3
// ------------------------------------------------------------------------------
#define FC_BM 64
#define FC_BN 64
#define FC_BK 16
#define FC_TM 4
#define FC_TN 4
#define FC_GEMM_THREADS ((FC_BM / FC_TM) * (FC_BN / FC_TN))

// A tile: rows m0.. of the group's weights (row-major M x K) -> As[k][m].
template <typename T, int VECA>
__device__ __forceinline__ void load_a_tile(T (*As)[FC_BM + 1], const T* __restrict__ A,
                                            int M, int K, int m0, int k0, int tid) {
    constexpr int KV = FC_BK / VECA;
    for (int e = tid; e < FC_BM * KV; e += FC_GEMM_THREADS) {
        const int m = e / KV, k = (e - m * KV) * VECA;
        const int gm = m0 + m, gk = k0 + k;
        if (VECA > 1 && gm < M && gk + VECA <= K) {
            const VecLoad<T, VECA> v =
                *reinterpret_cast<const VecLoad<T, VECA>*>(A + (i64)gm * K + gk);
#pragma unroll
            for (int q = 0; q < VECA; ++q) As[k + q][m] = v.v[q];
        } else {
#pragma unroll
            for (int q = 0; q < VECA; ++q)
                As[k + q][m] = (gm < M && gk + q < K) ? __ldg(A + (i64)gm * K + gk + q) : T(0);
        }
    }
}

// B tile from an explicit matrix (row-major K x ncols, leading dimension ncols).
template <typename T, int VECB>
struct ExplicitB {
    const T* B;
    int K;
    i64 ncols;
    __device__ __forceinline__ void load(T (*Bs)[FC_BN], i64 n0, int k0, int tid) const {
        constexpr int NV = FC_BN / VECB;
        for (int e = tid; e < FC_BK * NV; e += FC_GEMM_THREADS) {
            const int k = e / NV, n = (e - k * NV) * VECB;
            const int gk = k0 + k;
            const i64 gn = n0 + n;
            if (VECB > 1 && gk < K && gn + VECB <= ncols) {
                const VecLoad<T, VECB> v =
                    *reinterpret_cast<const VecLoad<T, VECB>*>(B + (i64)gk * ncols + gn);
#pragma unroll
                for (int q = 0; q < VECB; ++q) Bs[k][n + q] = v.v[q];
            } else {
#pragma unroll
                for (int q = 0; q < VECB; ++q)
                    Bs[k][n + q] = (gk < K && gn + q < ncols) ? __ldg(B + (i64)gk * ncols + gn + q)
                                                              : T(0);
            }
        }
    }
};

// B tile gathered from x: B[k, col] = x~[n, g*Cg + c, oy*sh - pt + i*dh, ox*sw - pl + j*dw].
// With 256 threads and BN = 64 a thread always loads column tid % 64 of the tile and
// rows tid/64 + 4*l, so the column decode happens once, in the constructor.
template <typename T, int PAD>
struct ImplicitB {
    const T* xg;  // image n, first channel of group g (nullptr: column past the end)
    int K, taps, kw, H, W, dh, dw, iy0, ix0;
    __device__ __forceinline__ ImplicitB(const T* x, int C, int cg, int g, int H_, int W_,
                                         int kh, int kw_, int Wo, i64 P, i64 ncols, i64 n0,
                                         int sh, int sw, int pt, int pl, int dh_, int dw_,
                                         int tid)
        : K(cg * kh * kw_), taps(kh * kw_), kw(kw_), H(H_), W(W_), dh(dh_), dw(dw_) {
        const i64 col = n0 + tid % FC_BN;
        if (col < ncols) {
            const i64 n = col / P;
            const int p = (int)(col - n * P);
            const int oy = p / Wo, ox = p - oy * Wo;
            xg = x + ((i64)n * C + (i64)g * cg) * H * W;
            iy0 = oy * sh - pt;
            ix0 = ox * sw - pl;
        } else {
            xg = nullptr;
            iy0 = ix0 = 0;
        }
    }
    __device__ __forceinline__ void load(T (*Bs)[FC_BN], i64 n0, int k0, int tid) const {
        static_assert(FC_GEMM_THREADS % FC_BN == 0, "one column per thread");
        const int n = tid % FC_BN;
        for (int k = tid / FC_BN; k < FC_BK; k += FC_GEMM_THREADS / FC_BN) {
            const int gk = k0 + k;
            T v = T(0);
            if (xg != nullptr && gk < K) {
                const int c = gk / taps, t = gk - c * taps;
                const int i = t / kw, j = t - i * kw;
                const int iy = pad_index<PAD>(iy0 + i * dh, H);
                const int ix = pad_index<PAD>(ix0 + j * dw, W);
                if (iy >= 0 && ix >= 0) v = __ldg(xg + ((i64)c * H + iy) * W + ix);
            }
            Bs[k][n] = v;
        }
    }
};

// One 64 x 64 tile of Y[g] = W[g] * B, bias added, columns scattered to NCHW:
// column col = n*P + p goes to y[n, g*Cog + m, p].
template <typename T, int VECA, typename BLoader>
__device__ __forceinline__ void gemm_conv_tile(const T* __restrict__ A, const BLoader& bl,
                                               const T* __restrict__ bias, T* __restrict__ y,
                                               int M, int K, i64 ncols, i64 P, int Cout,
                                               int g, int has_bias) {
    __shared__ T As[FC_BK][FC_BM + 1];  // +1: conflict-free transposed stores
    __shared__ T Bs[FC_BK][FC_BN];
    const int tid = threadIdx.x;
    const int tx = tid % (FC_BN / FC_TN), ty = tid / (FC_BN / FC_TN);
    const i64 n0 = (i64)blockIdx.x * FC_BN;
    const int m0 = blockIdx.y * FC_BM;

    T acc[FC_TM][FC_TN];
#pragma unroll
    for (int i = 0; i < FC_TM; ++i)
#pragma unroll
        for (int j = 0; j < FC_TN; ++j) acc[i][j] = T(0);

    for (int k0 = 0; k0 < K; k0 += FC_BK) {
        load_a_tile<T, VECA>(As, A, M, K, m0, k0, tid);
        bl.load(Bs, n0, k0, tid);
        __syncthreads();  // both tiles complete before any thread reads them
#pragma unroll
        for (int kk = 0; kk < FC_BK; ++kk) {
            T a[FC_TM], b[FC_TN];
#pragma unroll
            for (int i = 0; i < FC_TM; ++i) a[i] = As[kk][ty + i * (FC_BM / FC_TM)];
#pragma unroll
            for (int j = 0; j < FC_TN; ++j) b[j] = Bs[kk][tx + j * (FC_BN / FC_TN)];
#pragma unroll
            for (int i = 0; i < FC_TM; ++i)
#pragma unroll
                for (int j = 0; j < FC_TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();  // all reads of this k-tile done before the next loads overwrite
    }

#pragma unroll
    for (int j = 0; j < FC_TN; ++j) {
        const i64 col = n0 + tx + j * (FC_BN / FC_TN);
        if (col >= ncols) continue;
        const i64 n = col / P, p = col - n * P;
#pragma unroll
        for (int i = 0; i < FC_TM; ++i) {
            const int m = m0 + ty + i * (FC_BM / FC_TM);
            if (m >= M) continue;
            const int o = g * M + m;
            y[((i64)n * Cout + o) * P + p] = acc[i][j] + (has_bias ? bias[o] : T(0));
        }
    }
}

// v2 GEMM: B = the im2col workspace of a chunk; y = the chunk's output slice.
template <typename T, int VECA, int VECB>
__global__ void __launch_bounds__(FC_GEMM_THREADS, 2)
conv2d_gemm(const T* __restrict__ w, const T* __restrict__ cols, const T* __restrict__ bias,
            T* __restrict__ y, int Cout, int groups, int K, int Ho, int Wo, int nb,
            int has_bias) {
    const int M = Cout / groups, g = blockIdx.z;
    const i64 P = (i64)Ho * Wo, ncols = nb * P;
    const ExplicitB<T, VECB> bl{cols + (i64)g * K * ncols, K, ncols};
    gemm_conv_tile<T, VECA>(w + (i64)g * M * K, bl, bias, y, M, K, ncols, P, Cout, g,
                            has_bias);
}

// v3: implicit GEMM, no workspace.
template <typename T, int PAD, int VECA>
__global__ void __launch_bounds__(FC_GEMM_THREADS, 2)
conv2d_implicit_gemm(const T* __restrict__ x, const T* __restrict__ w,
                     const T* __restrict__ bias, T* __restrict__ y, int N, int C, int H, int W,
                     int Cout, int kh, int kw, int Ho, int Wo, int sh, int sw, int pt, int pl,
                     int dh, int dw, int groups, int has_bias) {
    const int M = Cout / groups, cg = C / groups, g = blockIdx.z;
    const int K = cg * kh * kw;
    const i64 P = (i64)Ho * Wo, ncols = N * P;
    const ImplicitB<T, PAD> bl(x, C, cg, g, H, W, kh, kw, Wo, P, ncols,
                               (i64)blockIdx.x * FC_BN, sh, sw, pt, pl, dh, dw, threadIdx.x);
    gemm_conv_tile<T, VECA>(w + (i64)g * M * K, bl, bias, y, M, K, ncols, P, Cout, g,
                            has_bias);
}

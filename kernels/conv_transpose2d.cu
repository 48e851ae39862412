// conv_transpose2d.cu: 2-D transposed convolution, gather form (deterministic), NCHW.
//
//   y[n, o, oy, ox] = b[o] + sum_{c < Cg, i < kh, j < kw} x[n, g*Cg + c, iy, ix] *
//                     w[g*Cg + c, o - g*Cog, i, j]
//   where iy*sh = oy + ph - i*dh and ix*sw = ox + pw - j*dw (exactly divisible,
//   0 <= iy < H, 0 <= ix < W), g = o / Cog, Cg = C/G, Cog = Cout/G.
//
// This is the adjoint of conv2d with respect to its input, written as a gather:
// every output element sums its own contributions in a fixed order, so there are no
// atomics and the result is bitwise reproducible (the scatter form needs atomics).
//
// Layouts: x (N, C, H, W), w (C, Cout/G, kh, kw), b (Cout,), y (N, Cout, Ho, Wo),
// C-contiguous, one dtype T (float or double), accumulation in T.
// FLOPs: 2 * N*C*H*W * Cog*kh*kw (the scatter count; the gather skips the taps that
// fall between strides) (+ N*Cout*Ho*Wo for the bias).
// Minimum bytes: sizeof(T) * (N*C*H*W + C*Cog*kh*kw + Cout + N*Cout*Ho*Wo).
//
// v1  conv_transpose2d_gather<T, COB>  ("direct")
//     One thread per (n, g, block of COB output channels, oy, ox), ox fastest
//     (coalesced stores and input reads), a 1-D grid-stride loop over the 64-bit
//     element count; COB accumulators in registers, so each gathered input value is
//     reused COB times.  Weights are read through the read-only cache (__ldg): they are
//     the same for all threads of a warp that share (g, channel block).  No shared
//     memory.
#include "fastconv_common.cuh"

template <typename T, int COB>
__global__ void __launch_bounds__(256, 2)
conv_transpose2d_gather(const T* __restrict__ x, const T* __restrict__ w,
                        const T* __restrict__ bias, T* __restrict__ y, int N, int C, int H,
                        int W, int Cout, int kh, int kw, int Ho, int Wo, int sh, int sw,
                        int ph, int pw, int dh, int dw, int groups, int has_bias) {
    const int cg = C / groups, cog = Cout / groups;
    const int cob_blocks = (cog + COB - 1) / COB;
    const int taps = kh * kw;
    const i64 total = (i64)N * groups * cob_blocks * Ho * Wo;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        i64 r = e;
        const int ox = (int)(r % Wo);  r /= Wo;
        const int oy = (int)(r % Ho);  r /= Ho;
        const int cb = (int)(r % cob_blocks);  r /= cob_blocks;
        const int g = (int)(r % groups);
        const int n = (int)(r / groups);
        const int ol0 = cb * COB;
        const int n_oc = min(COB, cog - ol0);

        T acc[COB];
#pragma unroll
        for (int o = 0; o < COB; ++o) acc[o] = T(0);

        for (int i = 0; i < kh; ++i) {
            const int ty = oy + ph - i * dh;
            if (ty < 0 || ty % sh != 0) continue;
            const int iy = ty / sh;
            if (iy >= H) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = ox + pw - j * dw;
                if (tx < 0 || tx % sw != 0) continue;
                const int ix = tx / sw;
                if (ix >= W) continue;
                for (int c = 0; c < cg; ++c) {
                    const int ci = g * cg + c;
                    const T v = __ldg(x + (((i64)n * C + ci) * H + iy) * W + ix);
                    const T* wp = w + ((i64)ci * cog + ol0) * taps + i * kw + j;
#pragma unroll
                    for (int o = 0; o < COB; ++o)
                        if (o < n_oc) acc[o] += v * __ldg(wp + (i64)o * taps);
                }
            }
        }
#pragma unroll
        for (int o = 0; o < COB; ++o) {
            if (o >= n_oc) break;
            const int oc = g * cog + ol0 + o;
            y[(((i64)n * Cout + oc) * Ho + oy) * Wo + ox] = acc[o] + (has_bias ? bias[oc] : T(0));
        }
    }
}

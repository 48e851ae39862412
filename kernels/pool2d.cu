// pool2d.cu: max/avg pooling and adaptive max/avg pooling, NCHW, float and double.
//
// max_pool2d:  y[nc, oy, ox] = max over taps (i, j) of x[nc, oy*sh - ph + i*dh, ox*sw - pw + j*dw]
//   (padding = -inf), PyTorch's rule (ATen DilatedMaxPool2d.cu): start at -inf with the
//   index of the first in-bounds tap; update when (v > max || isnan(v)), so NaN
//   propagates and the index is the LAST NaN in row-major window order, ties keep the
//   FIRST maximum.  idx = iy*W + ix (int64, per (n, c) plane of the unpadded input).
// avg_pool2d:  y = sum over the in-bounds taps / divisor, ATen AvgPool2d's divisor:
//   hs = oy*sh - ph, he = min(hs + kh, H + ph), pool = (he - hs)*(we - ws) (clipped at
//   H + ph: padding counts, the ceil_mode overhang does not), then hs, he clamped to
//   [0, H]; divisor = divisor_override if nonzero, else pool if count_include_pad, else
//   (he - hs)*(we - ws).  Sums accumulate in double (exact enough for any window).
// adaptive:    window of output i along an axis: [floor(i*In/Out), ceil((i+1)*In/Out)),
//   integer math; avg divides by the window's own size; max uses the max rule above.
//
// Layouts: x (N*C, H, W) viewed flat, y and idx (N*C, Ho, Wo), C-contiguous.
// FLOPs: one compare/add per tap: N*C*Ho*Wo*kh*kw (adaptive: the sum of window sizes).
// Minimum bytes: sizeof(T)*(N*C*H*W + N*C*Ho*Wo) (+ 8*N*C*Ho*Wo for the indices).
//
// v1  One thread per output element, ox fastest (coalesced stores; neighbouring
//     windows overlap, so loads hit L1/L2), 1-D grid-stride loop over the 64-bit
//     element count, 256 threads per block, no shared memory.  WITH_IDX = 0 skips the
//     index store.  Names: max_pool2d<T, WITH_IDX>, avg_pool2d<T>,
//     adaptive_avg_pool2d<T>, adaptive_max_pool2d<T, WITH_IDX>.
#include "fastconv_common.cuh"

template <typename T>
__device__ __forceinline__ void max_update(T v, i64 at, T& best, i64& best_at) {
    if (v > best || isnan(v)) {
        best = v;
        best_at = at;
    }
}

template <typename T, int WITH_IDX>
__global__ void __launch_bounds__(256, 2)
max_pool2d(const T* __restrict__ x, T* __restrict__ y, i64* __restrict__ idx, i64 NC, int H,
           int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh,
           int dw) {
    const i64 total = NC * Ho * Wo;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(e % Wo);
        const int oy = (int)((e / Wo) % Ho);
        const i64 nc = e / ((i64)Wo * Ho);
        int hs = oy * sh - ph, ws = ox * sw - pw;
        const int he = min(hs + (kh - 1) * dh + 1, H);
        const int we = min(ws + (kw - 1) * dw + 1, W);
        while (hs < 0) hs += dh;
        while (ws < 0) ws += dw;
        const T* plane = x + nc * H * W;
        T best = neg_inf<T>();
        i64 best_at = (i64)hs * W + ws;  // the first in-bounds tap
        for (int iy = hs; iy < he; iy += dh)
            for (int ix = ws; ix < we; ix += dw)
                max_update(__ldg(plane + (i64)iy * W + ix), (i64)iy * W + ix, best, best_at);
        y[e] = best;
        if (WITH_IDX) idx[e] = best_at;
    }
}

template <typename T>
__global__ void __launch_bounds__(256, 2)
avg_pool2d(const T* __restrict__ x, T* __restrict__ y, i64 NC, int H, int W, int Ho, int Wo,
           int kh, int kw, int sh, int sw, int ph, int pw, int count_include_pad,
           int divisor_override) {
    const i64 total = NC * Ho * Wo;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(e % Wo);
        const int oy = (int)((e / Wo) % Ho);
        const i64 nc = e / ((i64)Wo * Ho);
        int hs = oy * sh - ph, ws = ox * sw - pw;
        int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
        const int pool = (he - hs) * (we - ws);
        hs = max(hs, 0);
        ws = max(ws, 0);
        he = min(he, H);
        we = min(we, W);
        const T* plane = x + nc * H * W;
        double sum = 0.0;
        for (int iy = hs; iy < he; ++iy)
            for (int ix = ws; ix < we; ++ix) sum += (double)__ldg(plane + (i64)iy * W + ix);
        const int divisor = divisor_override != 0 ? divisor_override
                            : count_include_pad   ? pool
                                                  : (he - hs) * (we - ws);
        y[e] = (T)(sum / (double)divisor);
    }
}

// [start, end) of adaptive window i of `out` over `in` (ATen's integer formulas).
__device__ __forceinline__ void adaptive_window(int i, int in, int out, int& start, int& end) {
    start = (int)(((i64)i * in) / out);
    end = (int)(((i64)(i + 1) * in + out - 1) / out);
}

template <typename T>
__global__ void __launch_bounds__(256, 2)
adaptive_avg_pool2d(const T* __restrict__ x, T* __restrict__ y, i64 NC, int H, int W, int Ho,
                    int Wo) {
    const i64 total = NC * Ho * Wo;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(e % Wo);
        const int oy = (int)((e / Wo) % Ho);
        const i64 nc = e / ((i64)Wo * Ho);
        int hs, he, ws, we;
        adaptive_window(oy, H, Ho, hs, he);
        adaptive_window(ox, W, Wo, ws, we);
        const T* plane = x + nc * H * W;
        double sum = 0.0;
        for (int iy = hs; iy < he; ++iy)
            for (int ix = ws; ix < we; ++ix) sum += (double)__ldg(plane + (i64)iy * W + ix);
        y[e] = (T)(sum / (double)((he - hs) * (we - ws)));
    }
}

template <typename T, int WITH_IDX>
__global__ void __launch_bounds__(256, 2)
adaptive_max_pool2d(const T* __restrict__ x, T* __restrict__ y, i64* __restrict__ idx,
                    i64 NC, int H, int W, int Ho, int Wo) {
    const i64 total = NC * Ho * Wo;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(e % Wo);
        const int oy = (int)((e / Wo) % Ho);
        const i64 nc = e / ((i64)Wo * Ho);
        int hs, he, ws, we;
        adaptive_window(oy, H, Ho, hs, he);
        adaptive_window(ox, W, Wo, ws, we);
        const T* plane = x + nc * H * W;
        T best = neg_inf<T>();
        i64 best_at = (i64)hs * W + ws;
        for (int iy = hs; iy < he; ++iy)
            for (int ix = ws; ix < we; ++ix)
                max_update(__ldg(plane + (i64)iy * W + ix), (i64)iy * W + ix, best, best_at);
        y[e] = best;
        if (WITH_IDX) idx[e] = best_at;
    }
}

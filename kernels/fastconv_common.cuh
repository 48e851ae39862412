// fastconv_common.cuh: helpers shared by the fastconv CUDA C kernels.
//
// Included textually by the host code (fastconv/wrappers/cupy_backend.py inlines it
// into each .cu before compiling, so CuPy's cache key and the emulator's hash cover
// it).  Compiles under NVRTC (no system headers) and under g++ with
// fastconv/cudaemu/cuda_emu.h.
//
// Contents:
//   i64                     64-bit index type: every offset into a tensor that can
//                           exceed 2^31 elements is computed in it.
//   PadMode / pad_index     the padding modes of conv2d as index maps
//   neg_inf<T>()            -inf without <math.h> (NVRTC rejects INFINITY w/o header)
//   VecLoad<T, V>           V consecutive elements in one aligned (vector) load
#pragma once

typedef long long i64;

// Padding modes, the template parameter PAD of the conv kernels (and a part of
// every kernel name): 0 zeros, 1 reflect, 2 replicate, 3 circular.
enum PadMode { PAD_ZEROS = 0, PAD_REFLECT = 1, PAD_REPLICATE = 2, PAD_CIRCULAR = 3 };

// Source index of padded coordinate i along an axis of length n, or -1 for a zero.
// Valid for i in [-pad_before, n + pad_after): fastconv.arguments guarantees
// pad < n for reflect and pad <= n for circular, as PyTorch does.
template <int PAD>
__device__ __forceinline__ int pad_index(int i, int n) {
    if (PAD == PAD_ZEROS) return (i >= 0 && i < n) ? i : -1;
    if (PAD == PAD_REFLECT) return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
    if (PAD == PAD_REPLICATE) return i < 0 ? 0 : (i >= n ? n - 1 : i);
    return i < 0 ? i + n : (i >= n ? i - n : i);  // circular
}

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() {
    return __int_as_float(0xff800000u);
}
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000ull);
}

// V consecutive T in one load; alignas makes NVCC emit ld.global.v{2,4}.
template <typename T, int V>
struct alignas(sizeof(T) * V) VecLoad {
    T v[V];
};

__device__ __forceinline__ int ceil_div_int(int a, int b) { return (a + b - 1) / b; }

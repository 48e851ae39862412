// cuda_emu.h: just enough of CUDA C's device-side language for g++ to compile a
// fastconv .cu source unchanged and run it on the CPU (tests only).
//
// What each CUDA construct becomes:
//   __global__, __device__, __host__      nothing: kernels are plain C++ functions
//   __forceinline__                       inline + always_inline
//   __launch_bounds__(...)                nothing
//   threadIdx, blockIdx, blockDim,        __thread (TLS) variables owned by the runtime
//   gridDim                               (cuda_emu_runtime.h), set before a thread runs
//   __shared__                            a function-local `static`.  This is only right
//                                         because the runtime runs ONE block at a time,
//                                         under a process-wide launch lock: all threads of
//                                         the running block share the static, and no other
//                                         block can see it concurrently.  A runtime that
//                                         ran blocks concurrently would need per-block
//                                         storage instead.
//   __syncthreads()                       a barrier over the threads of the running block:
//                                         a fiber switch (default) or a mutex/condvar
//                                         barrier between OS threads (CUDA_EMU_THREADS,
//                                         used by the ThreadSanitizer/ASan builds).
//   __ldg(p)                              *p
//   __int_as_float & co.                  memcpy bit casts
//   min/max                               overloads with CUDA's mixed-type behaviour
//   isnan, fma, fmaxf, sqrt ...           <cmath> / <math.h>
// Not emulated: warp intrinsics, atomics' memory model, dynamic (extern) shared
// memory, textures, fp16 headers, timing.
#pragma once

#include <math.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

struct cuda_emu_dim3 {
    unsigned x, y, z;
};
typedef cuda_emu_dim3 dim3;
typedef cuda_emu_dim3 uint3;

extern "C" {
extern __thread cuda_emu_dim3 cuda_emu_threadIdx;
extern __thread cuda_emu_dim3 cuda_emu_blockIdx;
extern __thread cuda_emu_dim3 cuda_emu_blockDim;
extern __thread cuda_emu_dim3 cuda_emu_gridDim;
void cuda_emu_syncthreads(void);
int cuda_emu_launch(const unsigned* grid, const unsigned* block, void (*body)(void*),
                    void* ctx);
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define threadIdx cuda_emu_threadIdx
#define blockIdx cuda_emu_blockIdx
#define blockDim cuda_emu_blockDim
#define gridDim cuda_emu_gridDim
#define __syncthreads() cuda_emu_syncthreads()

using std::fma;
using std::isfinite;
using std::isinf;
using std::isnan;

template <typename T>
inline T __ldg(const T* p) { return *p; }

inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }

// CUDA's min/max: overloaded for the arithmetic types, mixed arguments promoted.
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return C(a) < C(b) ? C(b) : C(a);
}

namespace cuda_emu {

// Calls kernel `f` with its parameters read from `args`, an array of pointers
// to the argument values: the convention of cuLaunchKernel's kernelParams.
template <typename... P, std::size_t... I>
inline void invoke_impl(void (*f)(P...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<P>::type*>(args[I])...);
}
template <typename... P>
inline void invoke(void (*f)(P...), void** args) {
    invoke_impl(f, args, std::index_sequence_for<P...>{});
}

// Per parameter: size in bytes, and a kind code (1 pointer, 2 floating, 3 integer/bool),
// so the Python side can refuse arguments whose types do not match.
template <typename... P>
inline int describe(void (*)(P...), long long* sizes, int* kinds) {
    int i = 0;
    ((sizes[i] = (long long)sizeof(P),
      kinds[i] = std::is_pointer<P>::value ? 1 : std::is_floating_point<P>::value ? 2 : 3,
      ++i), ...);
    return i;
}

template <typename F>
struct Launch {
    F f;
    void** args;
    static void run(void* self) {
        Launch* l = static_cast<Launch*>(self);
        invoke(l->f, l->args);
    }
};

template <typename F>
inline int launch(F f, const unsigned* grid, const unsigned* block, void** args) {
    Launch<F> l{f, args};
    return cuda_emu_launch(grid, block, &Launch<F>::run, &l);
}

}  // namespace cuda_emu

// cuda_emu_runtime.h: the launch runtime of the CUDA-on-CPU emulator.  Compiled once
// per build flavour as its own shared library (this file is a header only so it
// ships as package data); kernel libraries built from .cu sources link to it.
//
// A launch runs the blocks of the grid one after another (x fastest), under a
// process-wide lock, so `__shared__` (a function-local static) belongs to the one
// running block.  The threads of a block run as
//   * fibers (ucontext), default: deterministic and fast.  __syncthreads() switches
//     back to the scheduler; a round ends when every live fiber waits at the barrier
//     or has returned.  Fibers waiting while others have returned is a divergent
//     barrier: the launch fails with an error (on a GPU: undefined behaviour).
//   * OS threads (CUDA_EMU_THREADS=1): one std::thread per CUDA thread of a block
//     (reused for every block of the launch) and a mutex/condvar barrier, so
//     ThreadSanitizer sees the real happens-before edges
//     (a missing barrier is reported as a data race) and ASan/UBSan check every
//     access.  A thread that returns drops out of the barrier (no hang); threads
//     that passed different numbers of barriers fail the launch.
// Launch configurations outside CUDA's limits fail like cudaErrorInvalidConfiguration.
#include <ucontext.h>
#include <sys/mman.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu.h"

extern "C" {
__thread cuda_emu_dim3 cuda_emu_threadIdx;
__thread cuda_emu_dim3 cuda_emu_blockIdx;
__thread cuda_emu_dim3 cuda_emu_blockDim;
__thread cuda_emu_dim3 cuda_emu_gridDim;
}

namespace {

std::mutex g_launch_mutex;
std::string g_last_error;

int fail(const std::string& message) {
    g_last_error = message;
    return 1;
}

cuda_emu_dim3 index_of(unsigned linear, const unsigned* dims) {
    cuda_emu_dim3 d;
    d.x = linear % dims[0];
    d.y = (linear / dims[0]) % dims[1];
    d.z = linear / (dims[0] * dims[1]);
    return d;
}

#if CUDA_EMU_THREADS
// ---------------------------------------------------------------- OS threads
struct BlockBarrier {
    std::mutex m;
    std::condition_variable cv;
    unsigned members, arrived = 0;
    unsigned long generation = 0;
    explicit BlockBarrier(unsigned n) : members(n) {}
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(m);
        unsigned long gen = generation;
        if (++arrived == members) {
            arrived = 0;
            ++generation;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != gen; });
        }
    }
    void drop() {  // a returned thread leaves the barrier
        std::lock_guard<std::mutex> lock(m);
        --members;
        if (members > 0 && arrived == members) {
            arrived = 0;
            ++generation;
            cv.notify_all();
        }
    }
};

__thread BlockBarrier* t_barrier;
__thread unsigned long t_syncs;

// The grid's blocks run one after another on the same blockDim OS threads (created
// once per launch).  After each block every thread meets at `block_end` (never
// dropped); thread 0 then checks that all threads passed the same number of
// __syncthreads and re-arms the block barrier, and a second `block_end` publishes
// that to everyone before the next block.  These mutex/condvar barriers are also
// the happens-before edges ThreadSanitizer needs between block b's and block b+1's
// uses of the same __shared__ storage.
int run_grid(const unsigned* grid, const unsigned* block, void (*body)(void*), void* ctx) {
    const unsigned n = block[0] * block[1] * block[2];
    const unsigned long long blocks = 1ull * grid[0] * grid[1] * grid[2];
    BlockBarrier barrier(n), block_end(n);
    std::vector<unsigned long> syncs(n, 0);
    bool stop = false;
    std::string error;
    auto worker = [&](unsigned t) {
        cuda_emu_threadIdx = index_of(t, block);
        cuda_emu_blockDim = {block[0], block[1], block[2]};
        cuda_emu_gridDim = {grid[0], grid[1], grid[2]};
        t_barrier = &barrier;
        for (unsigned long long b = 0; b < blocks; ++b) {
            cuda_emu_blockIdx = {unsigned(b % grid[0]), unsigned((b / grid[0]) % grid[1]),
                                 unsigned(b / (1ull * grid[0] * grid[1]))};
            t_syncs = 0;
            body(ctx);
            syncs[t] = t_syncs;
            barrier.drop();
            block_end.arrive_and_wait();  // every thread has finished block b
            if (t == 0) {
                for (unsigned u = 1; u < n && !stop; ++u) {
                    if (syncs[u] != syncs[0]) {
                        char buf[200];
                        std::snprintf(buf, sizeof buf,
                                      "divergent __syncthreads in block (%u,%u,%u): thread 0 "
                                      "passed %lu barriers, thread %u passed %lu",
                                      cuda_emu_blockIdx.x, cuda_emu_blockIdx.y,
                                      cuda_emu_blockIdx.z, syncs[0], u, syncs[u]);
                        error = buf;
                        stop = true;
                    }
                }
                std::lock_guard<std::mutex> lock(barrier.m);
                barrier.members = n;
                barrier.arrived = 0;
            }
            block_end.arrive_and_wait();  // re-armed barrier and `stop` visible to all
            if (stop) break;
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned t = 0; t < n; ++t) threads.emplace_back(worker, t);
    for (auto& th : threads) th.join();
    return stop ? fail(error) : 0;
}

void syncthreads_impl() {
    ++t_syncs;
    t_barrier->arrive_and_wait();
}

#else
// ---------------------------------------------------------------- fibers
constexpr std::size_t kStack = 256 * 1024;
enum { RUNNING = 0, WAITING = 1, DONE = 2 };

struct Fiber {
    ucontext_t ctx;
    int state;
};

ucontext_t g_scheduler;
std::vector<Fiber> g_fibers;
char* g_stacks = nullptr;
std::size_t g_stack_count = 0;
unsigned g_current = 0;
void (*g_body)(void*) = nullptr;
void* g_ctx = nullptr;

void fiber_main() {
    g_body(g_ctx);
    g_fibers[g_current].state = DONE;
    // returning resumes uc_link, the scheduler
}

int reserve_stacks(unsigned n) {
    if (n <= g_stack_count) return 0;
    if (g_stacks) munmap(g_stacks, g_stack_count * kStack);
    void* p = mmap(nullptr, n * kStack, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        g_stacks = nullptr;
        g_stack_count = 0;
        return fail("cannot map fiber stacks");
    }
    g_stacks = static_cast<char*>(p);
    g_stack_count = n;
    return 0;
}

int run_block(const unsigned* grid, const unsigned* block, cuda_emu_dim3 bidx,
              void (*body)(void*), void* ctx) {
    unsigned n = block[0] * block[1] * block[2];
    if (reserve_stacks(n)) return 1;
    g_fibers.resize(n);
    g_body = body;
    g_ctx = ctx;
    cuda_emu_blockIdx = bidx;
    cuda_emu_blockDim = {block[0], block[1], block[2]};
    cuda_emu_gridDim = {grid[0], grid[1], grid[2]};
    for (unsigned t = 0; t < n; ++t) {
        Fiber& f = g_fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = g_stacks + t * kStack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &g_scheduler;
        makecontext(&f.ctx, fiber_main, 0);
        f.state = RUNNING;
    }
    for (unsigned long round = 0;; ++round) {
        for (unsigned t = 0; t < n; ++t) {
            if (g_fibers[t].state != RUNNING) continue;
            g_current = t;
            cuda_emu_threadIdx = index_of(t, block);
            swapcontext(&g_scheduler, &g_fibers[t].ctx);
        }
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < n; ++t) {
            waiting += g_fibers[t].state == WAITING;
            done += g_fibers[t].state == DONE;
        }
        if (waiting == 0) return 0;
        if (done > 0) {
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "divergent __syncthreads in block (%u,%u,%u): at barrier %lu, %u "
                          "threads wait while %u have returned",
                          bidx.x, bidx.y, bidx.z, round + 1, waiting, done);
            return fail(buf);
        }
        for (unsigned t = 0; t < n; ++t) g_fibers[t].state = RUNNING;
    }
}

void syncthreads_impl() {
    Fiber& f = g_fibers[g_current];
    f.state = WAITING;
    swapcontext(&f.ctx, &g_scheduler);
}
#endif

}  // namespace

extern "C" void cuda_emu_syncthreads(void) { syncthreads_impl(); }

extern "C" const char* cuda_emu_last_error(void) { return g_last_error.c_str(); }

extern "C" int cuda_emu_threads_mode(void) { return CUDA_EMU_THREADS ? 1 : 0; }

extern "C" int cuda_emu_launch(const unsigned* grid, const unsigned* block,
                               void (*body)(void*), void* ctx) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    g_last_error.clear();
    unsigned long long threads = 1ull * block[0] * block[1] * block[2];
    if (block[0] == 0 || block[1] == 0 || block[2] == 0 || block[0] > 1024 ||
        block[1] > 1024 || block[2] > 64 || threads > 1024) {
        char buf[160];
        std::snprintf(buf, sizeof buf,
                      "invalid block (%u,%u,%u): each dimension >= 1, x,y <= 1024, z <= 64, "
                      "at most 1024 threads",
                      block[0], block[1], block[2]);
        return fail(buf);
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 2147483647u ||
        grid[1] > 65535 || grid[2] > 65535) {
        char buf[160];
        std::snprintf(buf, sizeof buf,
                      "invalid grid (%u,%u,%u): x in [1, 2^31-1], y and z in [1, 65535]",
                      grid[0], grid[1], grid[2]);
        return fail(buf);
    }
#if CUDA_EMU_THREADS
    return run_grid(grid, block, body, ctx);
#else
    for (unsigned z = 0; z < grid[2]; ++z)
        for (unsigned y = 0; y < grid[1]; ++y)
            for (unsigned x = 0; x < grid[0]; ++x)
                if (run_block(grid, block, cuda_emu_dim3{x, y, z}, body, ctx)) return 1;
    return 0;
#endif
}

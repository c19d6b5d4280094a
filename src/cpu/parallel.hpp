// A minimal fork-join loop over independent work items (one per (batch, head)).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace sageattn::cpu {

inline int resolve_threads(int requested) {
    if (requested > 0) return requested;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
}

// Calls body(i) for every i in [0, n) on up to `threads` threads; the first
// exception thrown by any call is rethrown here after all threads joined.
template <class Body>
void parallel_for(int64_t n, int threads, const Body& body) {
    const int64_t workers = std::min<int64_t>(resolve_threads(threads), n);
    if (workers <= 1) {
        for (int64_t i = 0; i < n; ++i) body(i);
        return;
    }
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto run = [&] {
        try {
            for (int64_t i = next++; i < n; i = next++) body(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = n;  // stop handing out work
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(workers - 1));
    for (int64_t t = 1; t < workers; ++t) pool.emplace_back(run);
    run();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace sageattn::cpu

// Checked int64 arithmetic in plain C++, the same on every compiler (MSVC has no
// __builtin_*_overflow): each returns true when the exact result does not fit in
// int64_t, and writes *out only when it does.
#pragma once

#include <cstdint>
#include <limits>

namespace sageattn {

inline bool mul_overflows(int64_t a, int64_t b, int64_t* out) {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
    if (a != 0 && b != 0) {
        // No division here overflows: no divisor is 0, and kMin is divided by positive values only.
        const bool over = a > 0 ? (b > 0 ? a > kMax / b : b < kMin / a) : (b > 0 ? a < kMin / b : a < kMax / b);
        if (over) return true;
    }
    *out = a * b;
    return false;
}

inline bool add_overflows(int64_t a, int64_t b, int64_t* out) {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
    if ((b > 0 && a > kMax - b) || (b < 0 && a < kMin - b)) return true;
    *out = a + b;
    return false;
}

}  // namespace sageattn

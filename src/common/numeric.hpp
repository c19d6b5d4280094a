// Bit-exact host conversions between float and the 8/16-bit formats the
// algorithm uses (docs/ALGORITHM.md §2). Round-to-nearest-even everywhere,
// as the GPU's cvt.rn instructions do; no dependence on compiler half types.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/algorithm.hpp"

namespace sageattn::num {

inline uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline float bf16_to_float(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
    uint32_t x = bits_of(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);  // ties to even; overflow carries into infinity as it should
    return static_cast<uint16_t>(x >> 16);
}

inline float fp16_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant · 2^-24, exact in float
        const float v = std::ldexp(static_cast<float>(mant), -24);
        return sign ? -v : v;
    }
    if (exp == 31) return float_of(sign | 0x7f800000u | (mant << 13));
    return float_of(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_fp16(float f) {
    uint32_t x = bits_of(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u);
    if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
    if (x >= 0x38800000u) {                        // a normal half (>= 2^-14)
        const uint32_t rounded = x + 0xfffu + ((x >> 13) & 1u);
        return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
    }
    // Subnormal half: a multiple of 2^-24; scaling by 2^24 is exact, nearbyint rounds to even.
    const float units = std::nearbyint(float_of(x) * 16777216.0f);
    return sign | static_cast<uint16_t>(units);
}

// OCP FP8 E4M3 ("e4m3fn"): bias 7, no infinities, max 448 (alg::kE4M3Max), NaN = 0x7f.
using alg::kE4M3Max;

inline float e4m3_to_float(uint8_t b) {
    const uint32_t exp = (b >> 3) & 0xfu;
    const uint32_t mant = b & 7u;
    float v;
    if (exp == 0)
        v = std::ldexp(static_cast<float>(mant), -9);
    else if (exp == 15 && mant == 7)
        v = NAN;
    else
        v = std::ldexp(static_cast<float>(8 + mant), static_cast<int>(exp) - 10);
    return (b & 0x80u) ? -v : v;
}

// cvt.rn.satfinite.e4m3: nearest even, finite values beyond ±448 clamp to ±448.
inline uint8_t float_to_e4m3(float f) {
    if (std::isnan(f)) return 0x7f;
    const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
    const float a = std::fabs(f);
    if (a >= kE4M3Max) return sign | 0x7e;
    if (a < 0.015625f) {  // below 2^-6: subnormal, a multiple of 2^-9 (8 units reach the first normal)
        return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
    }
    int e;
    std::frexp(a, &e);  // a = fr · 2^e, fr in [0.5, 1)
    int exponent = e - 1;
    int mant = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - exponent)));  // in [8, 16]
    if (mant == 16) {
        mant = 8;
        ++exponent;
    }
    return sign | static_cast<uint8_t>(((exponent + 7) << 3) | (mant - 8));
}

// A double to float rounded toward zero, with the last bit set when that was inexact
// ("round to odd"). Rounding the result to nearest even in a format at least two bits
// narrower gives the double's own nearest-even rounding: double → float → fp16 by
// nearest even twice can land a double just above a half-way point on the even side.
inline float float_round_to_odd(double d) {
    float f = static_cast<float>(d);
    if (std::isfinite(f) && static_cast<double>(f) != d) {
        uint32_t u = bits_of(f);
        if (std::fabs(static_cast<double>(f)) > std::fabs(d)) --u;  // nearest was away from zero: step back
        f = float_of(u | 1u);
    }
    return f;
}
inline uint16_t double_to_fp16(double d) { return float_to_fp16(float_round_to_odd(d)); }
inline uint16_t double_to_bf16(double d) { return float_to_bf16(float_round_to_odd(d)); }

inline float round_to_e4m3(float f) { return e4m3_to_float(float_to_e4m3(f)); }
inline float round_to_fp16(float f) { return fp16_to_float(float_to_fp16(f)); }
inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

}  // namespace sageattn::num

// The host conversions against independent definitions: every code of every
// format round-trips, and rounding is to nearest, ties to even.
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/checked.hpp"

#include "support.hpp"

namespace sageattn::test {
namespace {

// The nearest of the sorted, finite values of a format, ties to the even code.
template <class Decode>
float nearest(float x, int codes, const Decode& decode) {
    float best = 0;
    double best_err = INFINITY;
    int best_code = 0;
    for (int c = 0; c < codes; ++c) {
        const float v = decode(c);
        if (!std::isfinite(v)) continue;
        const double err = std::fabs(static_cast<double>(v) - x);
        if (err < best_err || (err == best_err && (c & 1) == 0 && (best_code & 1) == 1)) {
            best = v, best_err = err, best_code = c;
        }
    }
    return best;
}

TEST(Numeric, Fp16RoundTripsEveryCode) {
    for (int c = 0; c < 65536; ++c) {
        const float f = num::fp16_to_float(static_cast<uint16_t>(c));
        if (std::isnan(f)) continue;
        EXPECT_EQ(num::float_to_fp16(f), c) << c;
    }
}

TEST(Numeric, Bf16RoundTripsEveryCode) {
    for (int c = 0; c < 65536; ++c) {
        const float f = num::bf16_to_float(static_cast<uint16_t>(c));
        if (std::isnan(f)) continue;
        EXPECT_EQ(num::float_to_bf16(f), c) << c;
    }
}

TEST(Numeric, E4m3RoundTripsAndRoundsToNearestEven) {
    for (int c = 0; c < 256; ++c) {
        const float f = num::e4m3_to_float(static_cast<uint8_t>(c));
        if (std::isnan(f)) continue;
        if (c == 0x80) continue;  // -0 encodes back as -0 (0x80): fine either way
        EXPECT_EQ(num::float_to_e4m3(f), c) << c;
    }
    EXPECT_EQ(num::e4m3_to_float(0x7e), 448.0f);
    EXPECT_EQ(num::float_to_e4m3(1e9f), 0x7e);   // satfinite
    EXPECT_EQ(num::float_to_e4m3(-1e9f), 0xfe);
    EXPECT_EQ(num::float_to_e4m3(NAN), 0x7f);
    std::mt19937_64 r(seed() + 3);
    std::uniform_real_distribution<float> u(-460.0f, 460.0f);
    std::uniform_real_distribution<float> small(-0.03f, 0.03f);
    auto decode = [](int c) { return num::e4m3_to_float(static_cast<uint8_t>(c)); };
    for (int i = 0; i < 20000; ++i) {
        const float x = i % 2 ? u(r) : small(r);
        const float want = std::fabs(x) >= 448.0f ? std::copysign(448.0f, x) : nearest(x, 256, decode);
        ASSERT_EQ(num::round_to_e4m3(x), want) << x;
    }
    // Ties: 1.0625 lies halfway between 1.0 (even) and 1.125.
    EXPECT_EQ(num::round_to_e4m3(1.0625f), 1.0f);
    EXPECT_EQ(num::round_to_e4m3(1.1875f), 1.25f);
}

TEST(Numeric, Fp16AndBf16RoundToNearestEven) {
    std::mt19937_64 r(seed() + 4);
    std::uniform_real_distribution<float> u(-70000.0f, 70000.0f);
    std::uniform_real_distribution<float> tiny(-1e-4f, 1e-4f);
    for (int i = 0; i < 20000; ++i) {
        const float x = i % 2 ? u(r) : tiny(r);
        // fp16: compare against rounding through double arithmetic on neighbours.
        const uint16_t h = num::float_to_fp16(x);
        const float hv = num::fp16_to_float(h);
        if (std::isinf(hv)) {
            ASSERT_GE(std::fabs(x), 65520.0f) << x;
            continue;
        }
        const float up = num::fp16_to_float(static_cast<uint16_t>(h + 1)), down = num::fp16_to_float(static_cast<uint16_t>(h - 1));
        if (std::isfinite(up)) ASSERT_LE(std::fabs(static_cast<double>(hv) - x), std::fabs(static_cast<double>(up) - x)) << x;
        if (std::isfinite(down) && (h & 0x7fff) != 0)
            ASSERT_LE(std::fabs(static_cast<double>(hv) - x), std::fabs(static_cast<double>(down) - x)) << x;
        const float b = num::round_to_bf16(x);
        ASSERT_LE(std::fabs(static_cast<double>(b) - x), std::ldexp(std::fabs(x), -8)) << x;
    }
    EXPECT_EQ(num::float_to_fp16(65520.0f), 0x7c00);  // halfway to 65536 rounds to even: infinity
    EXPECT_EQ(num::float_to_fp16(65519.0f), 0x7bff);
    EXPECT_EQ(num::float_to_fp16(std::ldexp(1.0f, -25)), 0x0000);       // tie to even: 0
    EXPECT_EQ(num::float_to_fp16(std::ldexp(3.0f, -25)), 0x0002);       // tie to even: 2 units
    EXPECT_EQ(num::float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie to even
}

// The float64 reference's outputs are rounded once: a double just past a half-way point
// between two fp16 (bf16) values goes up, where rounding through float first (the
// half-way point itself) would tie to even and go down.
TEST(Numeric, DoublesRoundOnceToFp16AndBf16) {
    const double past_fp16 = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
    EXPECT_EQ(num::float_to_fp16(static_cast<float>(past_fp16)), 0x3c00);  // the double rounding
    EXPECT_EQ(num::double_to_fp16(past_fp16), 0x3c01);
    EXPECT_EQ(num::double_to_fp16(-past_fp16), 0xbc01);
    const double past_bf16 = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
    EXPECT_EQ(num::float_to_bf16(static_cast<float>(past_bf16)), 0x3f80);
    EXPECT_EQ(num::double_to_bf16(past_bf16), 0x3f81);
    EXPECT_EQ(num::double_to_fp16(1.0 + std::ldexp(1.0, -11)), 0x3c00);  // an exact tie still goes to even
    EXPECT_EQ(num::double_to_fp16(std::ldexp(1.0, -26)), 0x0000);         // below half the least subnormal
    EXPECT_EQ(num::double_to_fp16(std::ldexp(1.0, -25) + std::ldexp(1.0, -60)), 0x0001);
    EXPECT_EQ(num::double_to_fp16(65520.0 - std::ldexp(1.0, -30)), 0x7bff);  // just under the overflow point
    EXPECT_EQ(num::double_to_bf16(1e300), 0x7f80);
    EXPECT_TRUE(std::isnan(num::fp16_to_float(num::double_to_fp16(std::nan("")))));
    // Random doubles with low bits below float's precision: the nearest fp16, ties to even.
    std::mt19937_64 r(seed() + 5);
    std::uniform_real_distribution<double> u(-70000.0, 70000.0);
    for (int i = 0; i < 20000; ++i) {
        const double x = i % 2 ? u(r) : u(r) * 1e-9;
        const uint16_t h = num::double_to_fp16(x);
        const double hv = num::fp16_to_float(h);
        if (std::isinf(hv)) {
            ASSERT_GE(std::fabs(x), 65520.0) << x;
            continue;
        }
        for (int step : {-1, 1}) {
            if (step < 0 && (h & 0x7fff) == 0) continue;
            const double n = num::fp16_to_float(static_cast<uint16_t>(h + step));
            if (!std::isfinite(n)) continue;
            const double here = std::fabs(hv - x), there = std::fabs(n - x);
            ASSERT_LE(here, there) << x;
            if (here == there) ASSERT_EQ(h & 1, 0) << x;
        }
    }
}

// Validation's overflow checks (plain C++ on every compiler) at the edges of int64_t,
// and against the GCC/Clang builtins on random operands where those exist.
TEST(Numeric, CheckedInt64Arithmetic) {
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
    const int64_t p31 = int64_t{1} << 31, p32 = int64_t{1} << 32;
    struct Case { int64_t a, b; bool over; int64_t result; };
    const Case products[] = {
        {kMax, 1, false, kMax}, {kMax, 2, true, 0}, {kMin, 1, false, kMin}, {kMin, -1, true, 0},
        {-1, kMin, true, 0}, {-1, kMax, false, -kMax}, {0, kMin, false, 0}, {kMin, 0, false, 0},
        {p32, p31 - 1, false, p32 * (p31 - 1)}, {p32, p31, true, 0}, {-p32, p31, false, kMin},
        {p31, -p32, false, kMin}, {-p32, -p31, true, 0}, {3037000499, 3037000499, false, 9223372030926249001},
        {3037000500, 3037000500, true, 0}, {-3037000500, 3037000500, true, 0},
    };
    for (const Case& c : products) {
        int64_t out = 7;
        EXPECT_EQ(mul_overflows(c.a, c.b, &out), c.over) << c.a << " * " << c.b;
        EXPECT_EQ(out, c.over ? 7 : c.result) << c.a << " * " << c.b;
    }
    const Case sums[] = {
        {kMax, 0, false, kMax}, {kMax, 1, true, 0}, {kMin, -1, true, 0}, {kMin, kMax, false, -1},
        {-1, kMin, true, 0}, {kMax, kMin, false, -1}, {kMax / 2 + 1, kMax / 2, false, kMax}, {kMax / 2 + 1, kMax / 2 + 1, true, 0},
    };
    for (const Case& c : sums) {
        int64_t out = 7;
        EXPECT_EQ(add_overflows(c.a, c.b, &out), c.over) << c.a << " + " << c.b;
        EXPECT_EQ(out, c.over ? 7 : c.result) << c.a << " + " << c.b;
    }
#if defined(__GNUC__) || defined(__clang__)
    std::mt19937_64 r(seed() + 11);
    for (int i = 0; i < 200000; ++i) {
        // Operands of every magnitude, so that both outcomes are common.
        const int64_t a = static_cast<int64_t>(r()) >> (r() % 64), b = static_cast<int64_t>(r()) >> (r() % 64);
        int64_t ours = 0, theirs = 0;
        ASSERT_EQ(mul_overflows(a, b, &ours), __builtin_mul_overflow(a, b, &theirs)) << a << " * " << b;
        if (!__builtin_mul_overflow(a, b, &theirs)) ASSERT_EQ(ours, theirs) << a << " * " << b;
        ASSERT_EQ(add_overflows(a, b, &ours), __builtin_add_overflow(a, b, &theirs)) << a << " + " << b;
        if (!__builtin_add_overflow(a, b, &theirs)) ASSERT_EQ(ours, theirs) << a << " + " << b;
    }
#endif
}

}  // namespace
}  // namespace sageattn::test

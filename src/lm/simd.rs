//! Vectorisable f32 math for the forward's CPU kernels: `exp` and `tanh`
//! written as branch-free plain arithmetic (so a loop over them compiles to
//! SIMD, unlike libm's scalar `expf`), lane-parallel reductions, and
//! [`multiversion!`], which compiles a kernel for AVX-512 and AVX2 beside the
//! baseline and picks one at run time.
//!
//! Every function uses separate multiplies and adds (no fused multiply-add),
//! so each ISA version computes the same bytes: which one runs changes the
//! speed, never the result.

/// `e^x` within 2 ulp of `f32::exp` on its normal range (Cephes `expf`:
/// `x = n ln2 + r`, `|r| <= ln2 / 2`, a degree-7 polynomial for `e^r`, the
/// exponent `n` put into the bits). Below -87.3 the result is 0 (subnormals
/// flushed), above 88.72 it is infinity.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| <= 128.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.336_55, 88.722_84);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // n sits in t's low mantissa bits, offset by ROUND's; 2^n is applied as
    // two halves so that n = 128 (x near the top of the range) stays finite.
    // Wrapping integer ops: overflow checks (where a profile has them) would be
    // branches that stop the loop from vectorising (|n| <= 128, no overflow).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let n1 = ni >> 1;
    let pow = |k: i32| f32::from_bits((k.wrapping_add(127) << 23) as u32);
    let y = er * pow(n1) * pow(ni.wrapping_sub(n1));
    let y = if x < -87.336_55 { 0.0 } else { y };
    if x > 88.722_84 {
        f32::INFINITY
    } else {
        y
    }
}

/// `tanh(x)` within ~3e-7 relative: its Taylor series through `x^15` for
/// `|x| < 0.55` (where `1 - 2/(e^2x + 1)` would cancel), that formula with
/// [`exp`] elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p = -929_569.0f32 / 638_512_875.0;
    p = p * z + 21_844.0 / 6_081_075.0;
    p = p * z - 1_382.0 / 155_925.0;
    p = p * z + 62.0 / 2_835.0;
    p = p * z - 17.0 / 315.0;
    p = p * z + 2.0 / 15.0;
    p = p * z - 1.0 / 3.0;
    let small = x + x * z * p;
    // tanh(10) rounds to 1 in f32; clamping keeps e finite.
    let e = exp(2.0 * a.min(10.0));
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.55 {
        small
    } else {
        big
    }
}

/// The tanh approximation of GELU, `0.5 x (1 + tanh(y))` with
/// `y = sqrt(2/pi) (x + 0.044715 x^3)`, as `x / (1 + e^(-2y))` (the same
/// function, without tanh's cancellation).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let y = 0.797_884_6f32 * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * y))
}

/// SiLU, `x / (1 + e^-x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Lanes of the reductions: independent partial sums that vectorise (a
/// single running sum is a serial dependency the compiler must keep).
const LANES: usize = 16;

/// `sum(x^2)` over 16 lanes, combined pairwise (the same bytes on every ISA).
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j] * c[j];
        }
    }
    for (j, v) in rest.iter().enumerate() {
        acc[j] += v * v;
    }
    fold(acc, |a, b| a + b)
}

/// `max(x)` over 16 lanes (`-inf` for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max(c[j]);
        }
    }
    for (j, v) in rest.iter().enumerate() {
        acc[j] = acc[j].max(*v);
    }
    fold(acc, f32::max)
}

/// Replaces `x` by `e^(x - m)` and returns the sum of the results.
#[inline(always)]
pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            c[j] = exp(c[j] - m);
            acc[j] += c[j];
        }
    }
    for (j, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = exp(*v - m);
        acc[j] += *v;
    }
    fold(acc, |a, b| a + b)
}

#[inline(always)]
fn fold(mut acc: [f32; LANES], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for j in 0..w {
            acc[j] = f(acc[j], acc[j + w]);
        }
        w /= 2;
    }
    acc[0]
}

/// The widest SIMD level this CPU runs: 2 for AVX-512 (F, BW, DQ, VL), 1 for
/// AVX2, 0 for the baseline. Read once.
#[inline]
pub fn level() -> u8 {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                return 2;
            }
            if has!("avx2") {
                return 1;
            }
        }
        0
    })
}

/// Defines `fn $name(args)` whose body is compiled three times (AVX-512,
/// AVX2, baseline) and dispatched on [`level`]. Arguments are plain values
/// and slices (elided lifetimes only).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v256($($arg: $ty),*) $(-> $ret)? { inner($($arg),*) }
                match $crate::lm::simd::level() {
                    // SAFETY: level() checked that the CPU has these features.
                    2 => return unsafe { v512($($arg),*) },
                    1 => return unsafe { v256($($arg),*) },
                    _ => {}
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f32) -> f32 {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs().max(f32::MIN_POSITIVE)
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.7 {
            worst = worst.max(rel(exp(x), x.exp()));
            x += 0.000_37;
        }
        for x in [-1e-7f32, 0.0, 1e-7, 0.5, -0.5, 0.346_573_6, -0.346_573_6] {
            worst = worst.max(rel(exp(x), x.exp()));
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_and_gelu_are_within_1e6_of_std() {
        let (mut wt, mut wg) = (0f32, 0f32);
        let mut x = -12.0f32;
        while x < 12.0 {
            wt = wt.max(rel(tanh(x), x.tanh()));
            // The same f32 formula with std's exp (f32 rounding of y itself
            // moves e^-2y by up to |y| * 1e-7 for x << 0, whatever the exp).
            let y = 0.797_884_6f32 * (x + 0.044_715 * x * x * x);
            let g = x / (1.0 + (-2.0 * y).exp());
            if g.abs() > 1e-30 {
                wg = wg.max(rel(gelu_tanh(x), g));
            }
            x += 0.000_61;
        }
        assert!(wt < 1e-6, "tanh worst relative error {wt}");
        assert!(wg < 1e-6, "gelu worst relative error {wg}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
    }

    multiversion! {
        fn sum_exp(x: &[f32]) -> f32 {
            let mut v = x.to_vec();
            exp_sub_sum(&mut v, 0.0) + sum_sq(x) + max(x)
        }
    }

    #[test]
    fn reductions_match_and_every_isa_agrees() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let want = x.iter().map(|v| v.exp()).sum::<f32>()
            + x.iter().map(|v| v * v).sum::<f32>()
            + x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let got = sum_exp(&x);
        assert!(rel(got, want) < 1e-6, "{got} vs {want}");
        // The dispatched version and the inlined baseline give the same bytes.
        let mut v = x.clone();
        let base = exp_sub_sum(&mut v, 0.0) + sum_sq(&x) + max(&x);
        assert_eq!(got.to_bits(), base.to_bits());
    }
}

//! f32 <-> bf16 conversion (round to nearest even, NaN kept quiet), written
//! as plain integer arithmetic so that the compiler vectorises it.

/// bf16 bits of `x`, rounded to nearest even.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((u >> 16) & 1);
    (u.wrapping_add(round) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[inline]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Converts `src` into `dst` (same length).
pub fn convert_to_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "bf16 conversion: lengths differ");
    // The same integer arithmetic compiled for AVX-512 where the CPU has it
    // (the crate's baseline is SSE2): the same bytes, 4x the lanes.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512 F and BW.
        return unsafe { convert_avx512(src, dst) };
    }
    convert(src, dst);
}

#[inline(always)]
fn convert(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_bf16(s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn convert_avx512(src: &[f32], dst: &mut [u16]) {
    convert(src, dst);
}

/// A bf16 copy of `src`.
pub fn to_bf16_vec(src: &[f32]) -> Vec<u16> {
    let mut out = Vec::with_capacity(src.len());
    // SAFETY: u16 has no invalid bit patterns and the conversion writes every
    // element before the vector is read (it saves zeroing the buffer first).
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(src.len())
    };
    convert_to_bf16(src, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_like_half() {
        let mut r = crate::rng::SplitMix64::new(7);
        for _ in 0..100_000 {
            let x = (r.normal() * 1e3) as f32 * (r.next_f64() as f32);
            assert_eq!(to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x}");
        }
        for x in [
            0.0f32,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            1e-40,
        ] {
            assert_eq!(to_bf16(x), half::bf16::from_f32(x).to_bits(), "{x}");
            assert_eq!(from_bf16(to_bf16(x)), half::bf16::from_f32(x).to_f32());
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }
}

//! Scalar numerics shared by the kernels (`ops`, `int8`) and the quantization modules
//! (`quant`), below all of them so that none imports another for them: round half to even, as
//! C's `nearbyint` in the default rounding mode (PyTorch's quantizers and fake-quant), in a form
//! that vectorises, and the float bound of the int64 conversion.

/// 2^63 as f32: the first value whose int64 conversion overflows.
pub(crate) const TWO_POW_63: f32 = 9_223_372_036_854_775_808.0;

/// `x.round_ties_even()` without the libm call it compiles to on baseline x86-64 (no SSE4.1
/// `roundss`), so that loops around it vectorise: below 2^23 in magnitude, adding and
/// subtracting 2^23 rounds `|x|` to an integer in hardware with ties to even, and the sign (of
/// zero too) is put back after. Larger values, infinities and NaN are returned as they are
/// (integers already, or not numbers).
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_POW_23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO_POW_23 {
        ((a + TWO_POW_23) - TWO_POW_23).copysign(x)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::round_half_even;

    /// Bit for bit `round_ties_even` on ties, near-ties, zeros, the 2^22..2^23 band, large and
    /// non-finite values, and on pseudo-random bit patterns and quarter steps.
    #[test]
    fn round_half_even_matches_round_ties_even() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999997,
            162.5,
            163.5,
            4_194_303.5,
            -4_194_303.5,
            4_194_304.5,
            -4_194_304.5,
            8_388_607.5,
            8_388_608.0,
            8_388_609.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ];
        let mut state = 0x9E37_79B9u32;
        for _ in 0..100_000 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            values.push(f32::from_bits(state));
            values.push(f32::from_bits(state) % 1e7);
            values.push((state % 20_000) as f32 / 4.0 - 2_500.0);
        }
        for x in values {
            let (got, want) = (round_half_even(x), x.round_ties_even());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e}: {got:e} != {want:e}"
            );
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }
}

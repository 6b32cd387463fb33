//! quint8 quantization of a float slice (`torch.quantize_per_tensor`'s inner loop), the one
//! elementwise op that runs on every int8 forward's input (the `QuantStub`). The portable
//! [`reference()`] is [`quantize_val`] per value; an AVX2 variant is picked at run time and
//! gives the same bytes (`tests/it/int8_quantize.rs` holds [`QTensor::quantize`], which calls
//! [`quantize`], to `quantize_per_tensor` on ties, saturations, infinities and NaN).
//!
//! [`QTensor::quantize`]: crate::int8::QTensor::quantize

use crate::int8::tensor::quantize_val;

/// Quantizes `x` into `out` (equally long) to quint8 with `inv_scale = 1.0f / scale` and
/// `zero_point`, on the fastest path this CPU runs.
pub fn quantize(x: &[f32], inv_scale: f32, zero_point: i32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if super::level::allows(super::level::KernelLevel::Avx2) && is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked above).
        return unsafe { super::x86_64::avx2_quantize::quantize(x, inv_scale, zero_point, out) };
    }
    reference(x, inv_scale, zero_point, out)
}

/// The portable path: [`quantize_val`] into `[0, 255]` for each value.
pub fn reference(x: &[f32], inv_scale: f32, zero_point: i32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_val(v, inv_scale, zero_point, 0, 255) as u8;
    }
}

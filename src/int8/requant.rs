//! Requantization: from the exact int32 accumulator `acc = Σ (q_in − z_in)(q_w − z_w)` of a
//! convolution or linear layer to its quint8 output, with each engine's exact float arithmetic.
//!
//! # qnnpack (`PackedConvWeightsQnnp::apply_impl`, `PackedLinearWeightsQnnp::apply_impl`)
//! ```text
//! bias_q[c] = quantize_per_tensor(b[c], (float)(s_w[c]·s_in), 0, qint32)   // QuantizeBias
//!           = clamp_i32(nearbyint(b[c] · (1.0f / (s_w[c]·s_in))))
//! m[c]      = (s_w[c] · s_in) · (1.0f / s_out)       // generate_requantization_scales, f32
//! y         = clamp(cvtps((float)(acc + bias_q[c]) · m[c]) + z_out, lo, hi)
//! ```
//! (`q8gemm`/`q8conv`/`q8dwconv` SSE2 kernels: `_mm_cvtps_epi32` rounds ties to even.)
//!
//! # x86 / fbgemm (`PackedConvWeight::apply_impl`, `fbgemm::ReQuantizeOutput`,
//! `requantizeOutputProcessingAvx2`, the depthwise `requantize_`)
//! ```text
//! a[c] = s_w[c] · s_in                    // act_times_w_scale, f32
//! m[c] = a[c] / s_out                     // output_multiplier_float, f32 division
//! bf[c] = per-channel: b[c] / a[c]        // _mm256_div_ps
//!         per-tensor:  b[c] · (1.0f / a)  // act_times_w_rcp_v, a multiply
//! y    = clamp(cvtps(((float)acc + bf[c]) · m[c]) + z_out, lo, hi)
//! ```
//!
//! Both engines then saturate the same way: `packs_epi32` (to i16), `adds_epi16(z_out)`,
//! `packus_epi16` (to u8), then `[lo, hi]` = `[0, 255]`, or `[z_out, 255]` with a fused ReLU.
//! `cvtps` of a value outside the i32 range gives `i32::MIN`, as the hardware does.

use super::engine::Engine;
use super::tensor::{QParamsPt, WeightQParams, quantize_val, round_half_even};

/// `_mm_cvtps_epi32` on one lane: round to nearest, ties to even; out of range or NaN gives the
/// "integer indefinite" value `i32::MIN`.
#[inline]
pub fn cvtps_epi32(x: f32) -> i32 {
    if x.is_nan() || !(-2147483648.0f32..2147483648.0f32).contains(&x) {
        i32::MIN
    } else {
        round_half_even(x) as i32
    }
}

/// The SSE2/AVX2 output stage shared by both engines: `packs_epi32`, `adds_epi16(zero_point)`,
/// `packus_epi16`, then clamp to `[lo, hi]`.
#[inline]
pub fn saturate_to_u8(rounded: i32, zero_point: i32, lo: u8, hi: u8) -> u8 {
    let r16 = rounded.clamp(i16::MIN as i32, i16::MAX as i32);
    let with_zp = (r16 + zero_point).clamp(i16::MIN as i32, i16::MAX as i32);
    (with_zp.clamp(0, 255) as u8).clamp(lo, hi)
}

/// Precomputed per-output-channel requantization of one conv/linear layer, for one input scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    engine: Engine,
    /// qnnpack: the int32 bias added to the accumulator (zeros without bias); x86: unused.
    bias_i32: Vec<i32>,
    /// x86: the float bias term added to the float accumulator; qnnpack: unused.
    bias_f32: Vec<f32>,
    /// The float multiplier applied before rounding.
    multiplier: Vec<f32>,
    zero_point: i32,
    lo: u8,
    hi: u8,
}

impl Requant {
    /// Computes the requantization of a layer with `out_channels` outputs, weight qparams `w`,
    /// optional float `bias` (length `out_channels`, checked by the caller), input scale `s_in`
    /// and output qparams `out`, with a fused ReLU when `relu`.
    pub fn new(
        engine: Engine,
        out_channels: usize,
        w: &WeightQParams,
        bias: Option<&[f32]>,
        s_in: f32,
        out: QParamsPt,
        relu: bool,
    ) -> Self {
        let per_channel = w.is_per_channel();
        let mut bias_i32 = vec![0i32; out_channels];
        let mut bias_f32 = vec![0f32; out_channels];
        let mut multiplier = vec![0f32; out_channels];
        let inv_out = 1.0f32 / out.scale;
        for c in 0..out_channels {
            let (s_w, _) = w.channel(c);
            let a = s_w * s_in;
            let b = bias.map_or(0.0, |b| b[c]);
            match engine {
                Engine::Qnnpack => {
                    bias_i32[c] =
                        quantize_val(b, 1.0f32 / a, 0, i32::MIN as i64, i32::MAX as i64) as i32;
                    multiplier[c] = a * inv_out;
                }
                Engine::X86 => {
                    bias_f32[c] = if per_channel { b / a } else { b * (1.0f32 / a) };
                    multiplier[c] = a / out.scale;
                }
            }
        }
        Requant {
            engine,
            bias_i32,
            bias_f32,
            multiplier,
            zero_point: out.zero_point,
            lo: if relu { out.zero_point as u8 } else { 0 },
            hi: 255,
        }
    }

    /// The engine whose arithmetic this reproduces.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// qnnpack's int32 biases (zeros for x86).
    pub fn bias_i32(&self) -> &[i32] {
        &self.bias_i32
    }

    /// x86's float bias terms (zeros for qnnpack).
    pub fn bias_f32(&self) -> &[f32] {
        &self.bias_f32
    }

    /// The per-channel float multipliers.
    pub fn multipliers(&self) -> &[f32] {
        &self.multiplier
    }

    /// Output zero-point and clamp bounds `(zero_point, lo, hi)`.
    pub fn output_range(&self) -> (i32, u8, u8) {
        (self.zero_point, self.lo, self.hi)
    }

    /// Requantizes the exact accumulator `acc` (without bias) of output channel `c`.
    #[inline]
    pub fn apply(&self, c: usize, acc: i32) -> u8 {
        let scaled = match self.engine {
            Engine::Qnnpack => acc.wrapping_add(self.bias_i32[c]) as f32 * self.multiplier[c],
            Engine::X86 => (acc as f32 + self.bias_f32[c]) * self.multiplier[c],
        };
        saturate_to_u8(cvtps_epi32(scaled), self.zero_point, self.lo, self.hi)
    }
}

/// The requantization for the scale an input actually has: the one precomputed for
/// `cached_scale`, else the one built for the first other scale seen (kept in `seen`, so that a
/// layer prepared without knowing its input scale — a loaded int8 checkpoint — pays once, as
/// PyTorch's packed params re-pack once), else a fresh one from `rebuild` for that call.
pub(crate) fn requant_for_input<'a>(
    cached: &'a Requant,
    cached_scale: f32,
    seen: &'a std::sync::OnceLock<(f32, Requant)>,
    input_scale: f32,
    rebuild: impl Fn(f32) -> Requant,
) -> std::borrow::Cow<'a, Requant> {
    if input_scale == cached_scale {
        return std::borrow::Cow::Borrowed(cached);
    }
    let (scale, requant) = seen.get_or_init(|| (input_scale, rebuild(input_scale)));
    if *scale == input_scale {
        std::borrow::Cow::Borrowed(requant)
    } else {
        std::borrow::Cow::Owned(rebuild(input_scale))
    }
}

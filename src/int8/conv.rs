//! Quantized 2-D convolution (`torch.ao.nn.quantized.Conv2d` / `ConvReLU2d`, i.e.
//! `quantized::conv2d` / `quantized::conv2d_relu` with prepacked weights).
//!
//! ```text
//! acc[n,o,y,x] = Σ_{i,ky,kx} (q_in[n, g·C/G + i, y·s + ky − p, x·s + kx − p] − z_in) · (q_w[o,i,ky,kx] − z_w[o])
//! ```
//! with out-of-image taps contributing 0 (both engines pad with the input zero-point), then the
//! engine's requantization ([`crate::int8::requant`]). Dilation is 1.

use super::buffer::Buffer;
use super::engine::Engine;
use super::kernels::packed::{LANE_ROWS, PackedWeights, PackedWeightsS8};
use super::kernels::{DEFAULT, Int8Kernels, KernelCache};
use super::requant::{Requant, requant_for_input};
use super::tensor::{QParamsPt, QTensor, QWeight};
use crate::{Error, Result};

/// Geometry and activation of a quantized convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Stride (both spatial dimensions).
    pub stride: usize,
    /// Zero-point padding (both spatial dimensions, both sides).
    pub padding: usize,
    /// Groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    /// Fused ReLU (`ConvReLU2d`): the output is clamped at the output zero-point.
    pub relu: bool,
}

/// A prepared quantized convolution: weights packed once (zero-point removed, as i16), the
/// requantization precomputed for the expected input scale.
#[derive(Debug, Clone)]
pub struct Int8Conv2d {
    weight: QWeight,
    /// `q_w − z_w`, `[out, in/groups, kh, kw]`.
    packed: Vec<i16>,
    /// The same weights as GEMM panels, for ungrouped convolutions (the SIMD kernels' operand).
    gemm: Option<PackedWeights>,
    /// The same as i8 quad panels for the u8 × s8 kernels (ungrouped, weight zero-points 0).
    gemm_s8: Option<PackedWeightsS8>,
    /// The same in [`LANE_ROWS`]-row panels for the channels-last kernels (ungrouped, weight
    /// zero-points 0; see [`lane_weights`]).
    lanes_s8: Option<PackedWeightsS8>,
    bias: Option<Vec<f32>>,
    spec: Conv2dSpec,
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    engine: Engine,
    input_scale: f32,
    /// The requantization for the first input scale other than `input_scale`.
    seen_input: std::sync::OnceLock<(f32, Requant)>,
    output: QParamsPt,
    requant: Requant,
    /// What the kernels derive from this layer on first use.
    kernel_cache: KernelCache,
}

impl Int8Conv2d {
    /// Prepares a convolution.
    ///
    /// * `weight`: qint8 `[out, in/groups, kh, kw]`, per-tensor or per-output-channel;
    /// * `bias`: float, length `out` (as PyTorch keeps it);
    /// * `input`: the qparams inputs are expected to carry (only the scale matters; an input
    ///   with another scale is still handled, by recomputing the requantization for that call);
    /// * `output`: the layer's `scale` / `zero_point`.
    pub fn new(
        weight: QWeight,
        bias: Option<Vec<f32>>,
        spec: Conv2dSpec,
        input: QParamsPt,
        output: QParamsPt,
        engine: Engine,
    ) -> Result<Self> {
        let shape = weight.shape();
        if shape.len() != 4 {
            return Err(Error::Shape(format!(
                "conv2d weight must be [out, in/groups, kh, kw], got {shape:?}"
            )));
        }
        let (out_channels, icg, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
        if spec.groups == 0 || spec.stride == 0 {
            return Err(Error::Shape(format!(
                "conv2d needs groups >= 1 and stride >= 1, got {spec:?}"
            )));
        }
        if out_channels == 0 || icg == 0 || kh == 0 || kw == 0 || out_channels % spec.groups != 0 {
            return Err(Error::Shape(format!(
                "conv2d weight {shape:?} does not fit {} groups",
                spec.groups
            )));
        }
        if let Some(b) = &bias
            && b.len() != out_channels
        {
            return Err(Error::Shape(format!(
                "conv2d bias has {} values for {out_channels} output channels",
                b.len()
            )));
        }
        let per_out = icg * kh * kw;
        let packed: Vec<i16> = weight
            .data()
            .iter()
            .enumerate()
            .map(|(i, &q)| (q as i16) - weight.qparams().channel(i / per_out).1 as i16)
            .collect();
        let gemm = (spec.groups == 1).then(|| PackedWeights::pack(&packed, out_channels, per_out));
        let symmetric = (0..out_channels).all(|o| weight.qparams().channel(o).1 == 0);
        let gemm_s8 = (spec.groups == 1 && symmetric)
            .then(|| PackedWeightsS8::pack(&packed, out_channels, per_out))
            .flatten();
        let lanes_s8 = (spec.groups == 1 && symmetric)
            .then(|| lane_weights(&packed, out_channels, [icg, kh, kw]))
            .flatten();
        let requant = Requant::new(
            engine,
            out_channels,
            weight.qparams(),
            bias.as_deref(),
            input.scale,
            output,
            spec.relu,
        );
        Ok(Int8Conv2d {
            packed,
            gemm,
            gemm_s8,
            lanes_s8,
            bias,
            spec,
            in_channels: icg * spec.groups,
            out_channels,
            kernel: [kh, kw],
            engine,
            input_scale: input.scale,
            seen_input: std::sync::OnceLock::new(),
            output,
            requant,
            weight,
            kernel_cache: KernelCache::default(),
        })
    }

    /// Runs the convolution with the default kernels ([`DEFAULT`]).
    pub fn forward(&self, input: &QTensor) -> Result<QTensor> {
        self.forward_with(&DEFAULT, input)
    }

    /// Runs the convolution with the given kernels on a quint8 `[n, c, h, w]` input in either
    /// memory format. The output is in the format the kernels write
    /// ([`Int8Kernels::conv2d_formats`]): channels-last where they run channels-last, as
    /// PyTorch's quantized convolutions.
    pub fn forward_with(&self, kernels: &dyn Int8Kernels, input: &QTensor) -> Result<QTensor> {
        let s = input.shape();
        if s.len() != 4 || s[1] != self.in_channels {
            return Err(Error::Shape(format!(
                "conv2d expects an NCHW input with {} channels, got {s:?}",
                self.in_channels
            )));
        }
        let (oh, ow) = self.output_hw(s[2], s[3]).ok_or_else(|| {
            Error::Shape(format!(
                "conv2d input {s:?} is smaller than the {:?} kernel with padding {}",
                self.kernel, self.spec.padding
            ))
        })?;
        let mut out = Buffer::new(s[0] * self.out_channels * oh * ow);
        let rq = requant_for_input(
            &self.requant,
            self.input_scale,
            &self.seen_input,
            input.qparams().scale,
            |s| {
                Requant::new(
                    self.engine,
                    self.out_channels,
                    self.weight.qparams(),
                    self.bias.as_deref(),
                    s,
                    self.output,
                    self.spec.relu,
                )
            },
        );
        let (in_format, out_format) = kernels.conv2d_formats(self, s);
        kernels.conv2d(self, &rq, &input.to_format(in_format), &mut out);
        QTensor::from_buffer(
            out,
            &[s[0], self.out_channels, oh, ow],
            self.output,
            out_format,
        )
    }

    /// Output height and width for an `h × w` input, `None` when the kernel does not fit.
    pub fn output_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let (p, st) = (self.spec.padding, self.spec.stride);
        let oh = (h + 2 * p).checked_sub(self.kernel[0])? / st + 1;
        let ow = (w + 2 * p).checked_sub(self.kernel[1])? / st + 1;
        Some((oh, ow))
    }

    /// The packed weights `q_w − z_w`, `[out, in/groups, kh, kw]`.
    pub fn packed_weight(&self) -> &[i16] {
        &self.packed
    }

    /// The weights as GEMM panels ([`PackedWeights`]), for ungrouped convolutions.
    pub fn gemm_weights(&self) -> Option<&PackedWeights> {
        self.gemm.as_ref()
    }

    /// The weights as i8 quad panels ([`PackedWeightsS8`]), for ungrouped convolutions with
    /// symmetric weights.
    pub fn gemm_weights_s8(&self) -> Option<&PackedWeightsS8> {
        self.gemm_s8.as_ref()
    }

    /// What the kernels derived from this layer on first use ([`KernelCache`]).
    pub fn kernel_cache(&self) -> &KernelCache {
        &self.kernel_cache
    }

    /// The weights as i8 quad panels of [`LANE_ROWS`] rows in tap order (`lane_weights`), for
    /// ungrouped convolutions with symmetric weights.
    pub fn lane_weights_s8(&self) -> Option<&PackedWeightsS8> {
        self.lanes_s8.as_ref()
    }

    /// The original quantized weight.
    pub fn weight(&self) -> &QWeight {
        &self.weight
    }

    /// The float bias.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Geometry and activation.
    pub fn spec(&self) -> Conv2dSpec {
        self.spec
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Kernel height and width.
    pub fn kernel_size(&self) -> [usize; 2] {
        self.kernel
    }

    /// The engine whose arithmetic this reproduces.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Output scale and zero-point.
    pub fn output_qparams(&self) -> QParamsPt {
        self.output
    }
}

/// How the channels-last dense kernels cut a `kh × kw` kernel over `c` input channels into
/// taps of whole dwords, each tap `len` bytes of an NHWC input:
/// * one tap per kernel position (`[ky][kx]`), over the channels padded to a multiple of 4;
/// * when the channels are not a multiple of 4 (the stems' 3), one tap per kernel row (`[ky]`),
///   over its `kw · c` contiguous bytes (the row's pixels, in an NHWC image of `c` channels)
///   padded to a multiple of 4: 7 taps of 24 bytes for ResNet's 7×7 stem instead of 49 of 4
///   (a quarter of which multiply padding), in longer runs of `vpdpbusd`.
///
/// A tap's padding bytes meet zero weights: what the input holds there does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneTaps {
    /// Taps per output pixel.
    pub count: usize,
    /// Bytes per tap (a multiple of 4).
    pub len: usize,
    /// One tap per kernel row (else per kernel position).
    pub rows: bool,
}

impl LaneTaps {
    /// The taps of a `kh × kw` kernel over `c` input channels.
    pub(crate) fn of(c: usize, kh: usize, kw: usize) -> Self {
        if c.is_multiple_of(4) {
            LaneTaps {
                count: kh * kw,
                len: c,
                rows: false,
            }
        } else {
            LaneTaps {
                count: kh,
                len: (kw * c).next_multiple_of(4),
                rows: true,
            }
        }
    }

    /// Where weight `(ci, ky, kx)` of a kernel over `c` channels and `kw` columns lies in the
    /// `count · len` bytes of one output channel.
    fn offset(self, c: usize, kw: usize, (ci, ky, kx): (usize, usize, usize)) -> usize {
        if self.rows {
            ky * self.len + kx * c + ci
        } else {
            (ky * kw + kx) * self.len + ci
        }
    }
}

/// The `[out, in, kh, kw]` weights `w` (zero-points removed) as i8 quad panels of [`LANE_ROWS`]
/// rows for the channels-last dense kernels, in their tap order ([`LaneTaps`]) with zero
/// weights in the taps' padding (a 1×1 over a multiple of 4 channels is `w` itself). `None`
/// when a weight does not fit i8.
fn lane_weights(w: &[i16], out: usize, [icg, kh, kw]: [usize; 3]) -> Option<PackedWeightsS8> {
    let lt = LaneTaps::of(icg, kh, kw);
    let per_out = lt.count * lt.len;
    let mut taps = vec![0i16; out * per_out];
    for (o, row) in w.chunks_exact(icg * kh * kw).enumerate() {
        let dst = &mut taps[o * per_out..][..per_out];
        for (ci, plane) in row.chunks_exact(kh * kw).enumerate() {
            for (ky, line) in plane.chunks_exact(kw).enumerate() {
                for (kx, &v) in line.iter().enumerate() {
                    dst[lt.offset(icg, kw, (ci, ky, kx))] = v;
                }
            }
        }
    }
    PackedWeightsS8::pack_panels(&taps, out, per_out, LANE_ROWS)
}

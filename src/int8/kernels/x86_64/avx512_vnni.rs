//! AVX-512 VNNI int8 kernels (x86-64 with AVX-512 F/BW/VL and VNNI, detected at run time):
//! the [`Avx2`] set with its dense-convolution microkernel on `vpdpbusd`.
//!
//! `vpdpbusd` multiplies four u8 × s8 pairs and adds their sum to an i32 lane with no
//! intermediate saturation (unlike `vpmaddubsw`), so it is exact for every quint8 input and
//! every symmetric weight: all input blocks take it, not only the ≤ 127 ones of `reduce_range`
//! models. An input block packed as `[k/4][NR pixels][4]` bytes is one 64-byte vector per tap
//! quad; each of the tile's [`MR`] rows multiplies it by its four broadcast weights, one
//! instruction per 64 multiply-adds. The requantization is [`Avx2`]'s, so the outputs stay the
//! [`Reference`](crate::int8::Reference) kernels' bit for bit (`tests/it/int8_kernels.rs`).
//!
//! That microkernel now serves only dense convolutions the channels-last kernels do not take
//! (asymmetric weights), writing NHWC. Depthwise 3×3 and every other ungrouped convolution
//! run channels-last ([`super::avx512_depthwise`], [`super::avx512_dense`]): their inputs
//! and outputs are NHWC, as PyTorch's quantized convolutions', so a MobileNetV2 or ResNet
//! block passes its activations on without repacking; the stems read their NCHW input into a
//! padded NHWC copy and write NHWC. The add is [`super::avx512_add`]; other ops (linear,
//! pooling) run [`Avx2`]'s kernels.

use std::arch::x86_64::*;

use super::super::level::{self, KernelLevel};

use super::super::packed::{MR, NR};
use super::super::{Int8Kernels, elementwise};
use super::avx2::{Avx2, OutRq, RowRq, U8Tile, conv2d_with, requant16};
use super::avx512_add;
use super::avx512_dense;
use super::avx512_depthwise;
use super::dense_nhwc;
use crate::int8::add::AddParams;
use crate::int8::conv::Int8Conv2d;
use crate::int8::linear::Int8Linear;
use crate::int8::pool::PoolParams;
use crate::int8::requant::Requant;
use crate::int8::tensor::{MemoryFormat, QTensor};

/// The AVX-512 VNNI kernels. Obtain one with [`Avx512Vnni::detect`].
#[derive(Debug, Clone, Copy)]
pub struct Avx512Vnni {
    avx2: Avx2,
}

impl Avx512Vnni {
    /// The VNNI kernels, if this CPU has AVX-512 F, BW, VL and VNNI (and so AVX2).
    pub fn detect() -> Option<Self> {
        let avx512 = level::allows(KernelLevel::Avx512)
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        let avx2 = Avx2::detect()?;
        avx512.then_some(Avx512Vnni { avx2 })
    }
}

/// The `vpdpbusd` microkernel; exists only inside an [`Avx512Vnni`] (so on a VNNI CPU).
#[derive(Clone, Copy)]
struct Dpbusd;

impl U8Tile for Dpbusd {
    const FULL_RANGE: bool = true;

    unsafe fn tile(self, a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
        // SAFETY: a `Dpbusd` is only made by `Avx512Vnni`, which exists only on VNNI CPUs.
        unsafe { tile(a, b, rows, o) }
    }
}

/// The `MR × NR` tile over tap quads: `acc[r] += Σ_4 b[quad][q][i] · a[quad][r][i]`, the quads
/// alternating between two accumulator sets so that consecutive `vpdpbusd`s do not wait on
/// each other, then requantized 8 lanes at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile(a: &[i8], b: &[u8], rows: &[RowRq; MR], o: OutRq) -> [__m128i; MR] {
    let quads = b.len() / (NR * 4);
    assert!(a.len() >= quads * MR * 4 && b.len() >= quads * NR * 4);
    // Two accumulator sets, even and odd quads, as plain locals (indexing one array by
    // `kq % 2` sends them to the stack).
    let mut even = [_mm512_setzero_si512(); MR];
    let mut odd = [_mm512_setzero_si512(); MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let step = |acc: &mut [__m512i; MR], kq: usize| {
        // SAFETY: kq < quads, and both slices hold `quads` full quads (asserted above); w
        // points at MR quads of i8 inside `a`.
        unsafe {
            let bv = _mm512_loadu_si512(bp.add(kq * NR * 4) as *const __m512i);
            let w = ap.add(kq * MR * 4) as *const i32;
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_dpbusd_epi32(*acc, bv, _mm512_set1_epi32(w.add(r).read_unaligned()));
            }
        }
    };
    let mut kq = 0;
    while kq + 2 <= quads {
        step(&mut even, kq);
        step(&mut odd, kq + 1);
        kq += 2;
    }
    if kq < quads {
        step(&mut even, kq);
    }
    std::array::from_fn(|r| {
        let sum = _mm512_add_epi32(even[r], odd[r]);
        let halves = [
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64::<1>(sum),
        ];
        requant16(halves, [rows[r]; 2], o)
    })
}

impl Int8Kernels for Avx512Vnni {
    fn conv2d_formats(&self, op: &Int8Conv2d, shape: &[usize]) -> (MemoryFormat, MemoryFormat) {
        use MemoryFormat::{ChannelsLast, Contiguous};
        if avx512_depthwise::takes(op) {
            return (ChannelsLast, ChannelsLast);
        }
        match dense_nhwc::input_kind(op, shape) {
            Some(kind) => (dense_nhwc::input_format(kind, shape), ChannelsLast),
            // Asymmetric weights: the GEMM reads NCHW and stores its tiles transposed.
            None if op.gemm_weights().is_some() => (Contiguous, ChannelsLast),
            None => (Contiguous, Contiguous),
        }
    }

    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        if avx512_depthwise::takes(op) {
            // SAFETY: `self` exists only on CPUs with AVX-512 VNNI.
            return unsafe { avx512_depthwise::conv_depthwise(op, rq, input, out) };
        }
        if let Some(kind) = dense_nhwc::input_kind(op, input.shape()) {
            // SAFETY: as above.
            return unsafe { avx512_dense::conv_dense(op, kind, rq, input, out) };
        }
        // SAFETY: `self` exists only on CPUs with AVX-512 VNNI (and AVX2).
        unsafe { conv2d_with(op, rq, (input, out), MemoryFormat::ChannelsLast, Dpbusd) }
    }

    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        self.avx2.linear(op, rq, input, out)
    }

    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        // SAFETY: `self` exists only on CPUs with AVX-512 (F, BW) and FMA.
        elementwise(a, b, out, |a, b, out| unsafe {
            avx512_add::add(p, a, b, out)
        })
    }

    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]) {
        self.avx2.global_avg_pool(p, input, out)
    }
}

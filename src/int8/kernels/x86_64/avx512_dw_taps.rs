//! How a group's weights meet the window of [`super::avx512_depthwise`]: one input column
//! in the form they multiply, and one kernel column's products added to an accumulator.
//!
//! * [`GroupWeights`] (any `K×K`, weights up to 255 in magnitude): the column's rows paired
//!   byte by byte (`(x[0], x[1])`, `(x[2], x[3])` per lane, widened to i16), one `vpdpwssd`
//!   per pair with the lane's weight pair of that kernel column; the last row, widened to
//!   i32, pairs with a zero weight.
//! * [`QuadWeights`] (3×3, weights that fit i8): the three rows and a zero byte as one dword
//!   per lane, one `vpdpbusd` (u8 × s8, four products per lane) with `(w[0][kx], w[1][kx],
//!   w[2][kx], 0)`: half the multiplies.
//!
//! Sums are exact either way (`q ≤ 255`, at most 25 products per lane).

use std::arch::x86_64::*;

use super::avx512_depthwise::Window;
use super::avx512_lanes::LANES;

/// A group's weights of a `K×K` kernel (`P = K / 2` row pairs) as `vpdpwssd` operands, per
/// kernel column `kx`: lane `j` of `pairs[p][kx]` is `(w[j][2p][kx], w[j][2p+1][kx])`, of
/// `last[kx]` `(w[j][K−1][kx], 0)`.
#[derive(Clone, Copy)]
pub(super) struct GroupWeights<const K: usize, const P: usize> {
    pairs: [[__m512i; K]; P],
    last: [__m512i; K],
}

/// A 3×3 group's weights as `vpdpbusd` operands, per kernel column `kx`: lane `j` of `w[kx]`
/// is the bytes `(w[j][0][kx], w[j][1][kx], w[j][2][kx], 0)` (weights that fit i8).
#[derive(Clone, Copy)]
pub(super) struct QuadWeights {
    w: [__m512i; 3],
}

/// How a group's weights meet the window: one input column in the form they multiply, and
/// one kernel column's products added to an accumulator.
pub(super) trait Taps<const K: usize>: Copy + Send + Sync + 'static {
    type Column: Copy;

    /// Group `g`'s weights from the layer's `[c][K·K]` taps (lanes past channel `c` zero).
    fn build(weights: &[i16], c: usize, g: usize) -> Self;

    /// Input column `ix` of `window`.
    ///
    /// # Safety
    /// The in-image column `ix` of each window row lies inside its image, the zero row
    /// holds 16 readable bytes under the mask; the CPU has the features of [`conv_depthwise`].
    unsafe fn column(window: &Window<K>, ix: usize) -> Self::Column;

    /// `acc` plus the products of kernel column `kx` with `col`.
    ///
    /// # Safety
    /// The CPU has the features of [`conv_depthwise`].
    unsafe fn tap(&self, acc: __m512i, col: &Self::Column, kx: usize) -> __m512i;
}

impl<const K: usize, const P: usize> Taps<K> for GroupWeights<K, P> {
    type Column = Column<P>;

    fn build(weights: &[i16], c: usize, g: usize) -> Self {
        // SAFETY: `Taps` weights exist only where `conv_depthwise` runs (AVX-512 F).
        unsafe { group_weights::<K, P>(weights, c, g) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn column(window: &Window<K>, ix: usize) -> Column<P> {
        // SAFETY: the caller's contract.
        unsafe { window.column::<P>(ix) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tap(&self, acc: __m512i, col: &Column<P>, kx: usize) -> __m512i {
        let acc = (0..P).fold(acc, |acc, p| dpwssd(acc, col.pairs[p], self.pairs[p][kx]));
        dpwssd(acc, col.last, self.last[kx])
    }
}

impl Taps<3> for QuadWeights {
    type Column = __m512i;

    fn build(weights: &[i16], c: usize, g: usize) -> Self {
        let w = std::array::from_fn(|kx| {
            let bytes: [i8; 4 * LANES] = std::array::from_fn(|b| {
                let (ch, ky) = (g * LANES + b / 4, b % 4);
                match ch < c && ky < 3 {
                    true => weights[ch * 9 + ky * 3 + kx] as i8,
                    false => 0,
                }
            });
            // SAFETY: 64 bytes, any bit pattern is an __m512i.
            unsafe { std::mem::transmute::<[i8; 64], __m512i>(bytes) }
        });
        QuadWeights { w }
    }

    /// The three rows' 16 bytes as dwords 0–3, 4–7 and 16–19 of a `vpermt2d` pair, which
    /// gathers dword `L` of each row into 128-bit lane `L` (its fourth dword is not read:
    /// its products meet zero weights); `vpshufb` then interleaves each lane's rows byte by
    /// byte: byte `4j + ky` is row `ky` of channel `j`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn column(window: &Window<3>, ix: usize) -> __m512i {
        let inside = ix < window.w;
        let row = |ky: usize| -> __m128i {
            let (row, step) = window.rows[ky];
            let at = if inside {
                row.wrapping_add(ix * step)
            } else {
                window.zero
            };
            // SAFETY: an in-image pixel's group or the zero row (the caller's contract).
            unsafe { window.load(at) }
        };
        let (r0, r1, r2) = (row(0), row(1), row(2));
        let low = _mm512_zextsi256_si512(_mm256_set_m128i(r1, r0));
        let dwords = _mm512_set_epi32(0, 19, 7, 3, 0, 18, 6, 2, 0, 17, 5, 1, 0, 16, 4, 0);
        let rows = _mm512_permutex2var_epi32(low, dwords, _mm512_zextsi128_si512(r2));
        let bytes = _mm512_set4_epi32(0x0f0b_0703, 0x0e0a_0602, 0x0d09_0501, 0x0c08_0400);
        _mm512_shuffle_epi8(rows, bytes)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tap(&self, acc: __m512i, col: &__m512i, kx: usize) -> __m512i {
        _mm512_dpbusd_epi32(acc, *col, self.w[kx])
    }
}

/// Group `g`'s weights from the layer's `[c][K·K]` taps (lanes past channel `c` zero).
#[target_feature(enable = "avx512f")]
fn group_weights<const K: usize, const P: usize>(
    weights: &[i16],
    c: usize,
    g: usize,
) -> GroupWeights<K, P> {
    let taps = K * K;
    let lanes = |at: [usize; 2]| -> __m512i {
        let v: [i32; LANES] = std::array::from_fn(|j| {
            let ch = g * LANES + j;
            let [lo, hi] = at.map(|k| {
                if ch < c && k < taps {
                    weights[ch * taps + k] as u16 as u32
                } else {
                    0
                }
            });
            (lo | hi << 16) as i32
        });
        // SAFETY: v is 16 i32.
        unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) }
    };
    GroupWeights {
        pairs: std::array::from_fn(|p| {
            std::array::from_fn(|kx| lanes([2 * p * K + kx, (2 * p + 1) * K + kx]))
        }),
        // Tap index `taps` reads as a zero weight.
        last: std::array::from_fn(|kx| lanes([(K - 1) * K + kx, taps])),
    }
}

/// One input column of a window: its row pairs as i16 pairs, its last row as i32.
#[derive(Clone, Copy)]
pub(super) struct Column<const P: usize> {
    pairs: [__m512i; P],
    last: __m512i,
}

impl<const K: usize> Window<K> {
    /// Input column `ix`: rows `(2p, 2p+1)` as i16 pairs, row `K−1` as i32.
    ///
    /// # Safety
    /// The in-image column `ix` of each row lies inside its image, and `zero` holds 16
    /// readable bytes under the mask.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn column<const P: usize>(&self, ix: usize) -> Column<P> {
        let inside = ix < self.w;
        let row = |ky: usize| -> __m128i {
            let (row, step) = self.rows[ky];
            let at = if inside {
                row.wrapping_add(ix * step)
            } else {
                self.zero
            };
            // SAFETY: an in-image pixel's group or the zero row (contract above).
            unsafe { self.load(at) }
        };
        let pairs = std::array::from_fn(|p| {
            let (r0, r1) = (row(2 * p), row(2 * p + 1));
            let pairs = _mm256_set_m128i(_mm_unpackhi_epi8(r0, r1), _mm_unpacklo_epi8(r0, r1));
            _mm512_cvtepu8_epi16(pairs)
        });
        Column {
            pairs,
            last: _mm512_cvtepu8_epi32(row(K - 1)),
        }
    }
}

/// `vpdpwssd`, as written: LLVM's machine combiner otherwise splits chains of
/// `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` (two instructions for one).
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: a register-only instruction of a feature this function requires.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    acc
}

//! Packed operand layouts of the SIMD GEMM kernels, built in safe portable code.
//!
//! A dense convolution is a GEMM `C[m, p] = Σ_k A[m, k] · B[k, p]`: `A` the weights
//! (`m` output channels × `k = in/groups · kh · kw` taps, zero-points removed), `B` the im2col of
//! the input (`k` taps × `p` output pixels, input zero-point removed, zero outside the image).
//! The microkernel computes an [`MR`]` × `[`NR`] tile of `C` from a panel of each, multiplying
//! **pairs** of taps at once (`vpmaddwd`: i16 × i16 → i32, summed in pairs, exact), so both
//! panels interleave their `k` dimension by pairs:
//!
//! ```text
//! A panel i:  [k/2][MR rows][2]   row r of the panel = output channel i·MR + r
//! B block j:  [k/2][NR pixels][2] pixel q of the block = output pixel j·NR + q
//! ```
//!
//! Rows past `m`, pixels past `p` and the odd tap past `k` are zero, so the kernel never
//! branches on edges; the stores skip them. Weights are packed once, when the layer is prepared
//! (XNNPACK's and fbgemm's "prepacked weights"); input blocks are packed per call into a small
//! per-thread buffer that stays in L1 while every weight panel streams past it.

/// Output channels per weight panel (rows of the microkernel tile).
pub const MR: usize = 4;
/// Output pixels per input block (columns of the microkernel tile: two 8-lane i32 vectors).
pub const NR: usize = 16;
/// Output channels per weight panel of the channels-last kernels (one 16-lane i32 vector).
pub const LANE_ROWS: usize = 16;

/// Weights `[m, k]` as [`MR`]-row panels of tap pairs (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedWeights {
    data: Vec<i16>,
    m: usize,
    k: usize,
}

impl PackedWeights {
    /// Packs the row-major `[m, k]` weights `w` (zero-points already removed).
    pub fn pack(w: &[i16], m: usize, k: usize) -> Self {
        assert_eq!(w.len(), m * k, "weights must be [m, k]");
        let pairs = k.div_ceil(2);
        let panels = m.div_ceil(MR);
        let mut data = vec![0i16; panels * pairs * MR * 2];
        for (o, row) in w.chunks_exact(k.max(1)).enumerate().take(m) {
            let (panel, r) = (o / MR, o % MR);
            let base = panel * pairs * MR * 2;
            for (t, &v) in row.iter().enumerate() {
                data[base + ((t / 2) * MR + r) * 2 + t % 2] = v;
            }
        }
        PackedWeights { data, m, k }
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Taps per row.
    pub fn depth(&self) -> usize {
        self.k
    }

    /// Tap pairs per row (`⌈k / 2⌉`).
    pub fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Number of [`MR`]-row panels.
    pub fn panels(&self) -> usize {
        self.m.div_ceil(MR)
    }

    /// Panel `i`: `pairs() · MR · 2` values.
    pub fn panel(&self, i: usize) -> &[i16] {
        let len = self.pairs() * MR * 2;
        &self.data[i * len..][..len]
    }
}

/// Weights `[m, k]` for the u8 × s8 kernels (`vpmaddubsw` / `vpdpbusd`, four taps per i32
/// lane): panels of `R` rows of tap quads, `[k/4][R rows][4]` i8 (`R` = [`MR`] for the
/// pixel-column kernels, 16 for the channels-last ones, whose vector lanes are output
/// channels), and each row's sum `Σ_k w[o, k]`, which turns
/// `Σ q_in·w` into `Σ (q_in − z_in)·w`. Only for weights with zero-point 0 (every PyTorch qconfig's
/// qint8 weights are symmetric), so `w = q_w` fits i8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedWeightsS8 {
    data: Vec<i8>,
    row_sums: Vec<i32>,
    m: usize,
    k: usize,
    panel_rows: usize,
}

impl PackedWeightsS8 {
    /// Packs the row-major `[m, k]` weights `w` (zero-points removed) in [`MR`]-row panels;
    /// `None` if a value does not fit i8.
    pub fn pack(w: &[i16], m: usize, k: usize) -> Option<Self> {
        Self::pack_panels(w, m, k, MR)
    }

    /// [`Self::pack`] with `panel_rows` rows per panel.
    pub fn pack_panels(w: &[i16], m: usize, k: usize, panel_rows: usize) -> Option<Self> {
        assert_eq!(w.len(), m * k, "weights must be [m, k]");
        let r = panel_rows;
        let quads = k.div_ceil(4);
        let mut data = vec![0i8; m.div_ceil(r) * quads * r * 4];
        let mut row_sums = vec![0i32; m];
        for (o, row) in w.chunks_exact(k.max(1)).enumerate().take(m) {
            let base = (o / r) * quads * r * 4;
            for (t, &v) in row.iter().enumerate() {
                data[base + ((t / 4) * r + o % r) * 4 + t % 4] = i8::try_from(v).ok()?;
                row_sums[o] += v as i32;
            }
        }
        Some(PackedWeightsS8 {
            data,
            row_sums,
            m,
            k,
            panel_rows,
        })
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Taps per row.
    pub fn depth(&self) -> usize {
        self.k
    }

    /// Tap quads per row (`⌈k / 4⌉`).
    pub fn quads(&self) -> usize {
        self.k.div_ceil(4)
    }

    /// Rows per panel.
    pub fn panel_rows(&self) -> usize {
        self.panel_rows
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.m.div_ceil(self.panel_rows)
    }

    /// Panel `i`: `quads() · panel_rows() · 4` values.
    pub fn panel(&self, i: usize) -> &[i8] {
        let len = self.quads() * self.panel_rows * 4;
        &self.data[i * len..][..len]
    }

    /// `Σ_k w[o, k]` per row.
    pub fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }
}

/// The geometry of an ungrouped convolution's im2col for one image.
#[derive(Debug, Clone, Copy)]
pub struct Im2col {
    /// Input channels, height, width.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height and width.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// Output width (the output height follows from the pixel count).
    pub ow: usize,
    /// Output pixels (`oh · ow`).
    pub pixels: usize,
}

impl Im2col {
    /// Whether the im2col is the input itself (a 1×1, stride-1, unpadded convolution).
    pub fn is_identity(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Packs block `block` (pixels `block·NR ..`) of the im2col of `image` (`[c, h, w]` quint8)
    /// with zero-point `zp` into `dst` (`⌈c·kh·kw / 2⌉ · NR · 2` values).
    pub fn pack_block(&self, image: &[u8], zp: i16, block: usize, dst: &mut [i16]) {
        let k = self.c * self.kh * self.kw;
        let first = block * NR;
        let cols = NR.min(self.pixels - first);
        dst.fill(0);
        let mut origin = [(0isize, 0isize); NR];
        for (q, o) in origin.iter_mut().enumerate().take(cols) {
            let p = first + q;
            *o = (
                ((p / self.ow) * self.stride) as isize - self.pad as isize,
                ((p % self.ow) * self.stride) as isize - self.pad as isize,
            );
        }
        let (h, w) = (self.h as isize, self.w as isize);
        for t in 0..k {
            let (ci, ky, kx) = (
                t / (self.kh * self.kw),
                (t / self.kw) % self.kh,
                t % self.kw,
            );
            let plane = &image[ci * self.h * self.w..][..self.h * self.w];
            let row = &mut dst[(t / 2) * NR * 2..][..NR * 2];
            for (q, &(y0, x0)) in origin.iter().enumerate().take(cols) {
                let (y, x) = (y0 + ky as isize, x0 + kx as isize);
                if (0..h).contains(&y) && (0..w).contains(&x) {
                    row[q * 2 + t % 2] = plane[(y * w + x) as usize] as i16 - zp;
                }
            }
        }
    }
}

/// A padded copy of an image for im2col without bounds checks: every channel surrounded by `pad`
/// values of the padding value. At stride 2 each row is stored as its even columns, then its
/// odd columns, so that the taps of 16 neighbouring outputs are 16 contiguous values.
#[derive(Debug, Clone, Default)]
pub struct Padded<T> {
    data: Vec<T>,
    ph: usize,
    row_len: usize,
    /// Where the odd columns of a row start (0: not split).
    half: usize,
}

/// Zero-point removed, zero padding (the i16 kernels).
pub type PaddedImage = Padded<i16>;
/// Raw quint8, padded with the zero-point (the u8 × s8 kernels: a padding tap then contributes
/// `(z − z)·w = 0` after the row-sum correction).
pub type PaddedImageU8 = Padded<u8>;

impl PaddedImage {
    /// Pads `image` (`[geo.c, geo.h, geo.w]` quint8) with its zero-point `zp` removed.
    pub fn fill(&mut self, geo: &Im2col, image: &[u8], zp: i16) {
        self.fill_with(geo, image, 0, |q| q as i16 - zp)
    }

    /// [`Im2col::pack_block`] from this padded copy: the same values, as tap pairs.
    pub fn pack_block(&self, geo: &Im2col, block: usize, dst: &mut [i16]) {
        self.pack_groups(geo, block, 2, dst)
    }
}

impl PaddedImageU8 {
    /// Pads `image` (`[geo.c, geo.h, geo.w]`) with its zero-point `zp`.
    pub fn fill(&mut self, geo: &Im2col, image: &[u8], zp: u8) {
        self.fill_with(geo, image, zp, |q| q)
    }

    /// Packs block `block` of the im2col as `[k/4][NR pixels][4]` bytes (taps past `k` and
    /// pixels past the image are 0) into `dst` (`⌈k/4⌉ · NR · 4` bytes).
    pub fn pack_block(&self, geo: &Im2col, block: usize, dst: &mut [u8]) {
        self.pack_groups(geo, block, 4, dst)
    }
}

impl<T: Copy + Default> Padded<T> {
    fn fill_with(&mut self, geo: &Im2col, image: &[u8], pad: T, convert: impl Fn(u8) -> T) {
        let (ph, pw) = (geo.h + 2 * geo.pad, geo.w + 2 * geo.pad);
        self.half = if geo.stride == 2 { pw.div_ceil(2) } else { 0 };
        self.row_len = if geo.stride == 2 { 2 * self.half } else { pw };
        self.ph = ph;
        self.data.clear();
        self.data.resize(geo.c * ph * self.row_len, pad);
        for (ci, plane) in image.chunks_exact(geo.h * geo.w).enumerate().take(geo.c) {
            for (y, line) in plane.chunks_exact(geo.w).enumerate() {
                let row = &mut self.data[(ci * ph + y + geo.pad) * self.row_len..][..self.row_len];
                if self.half == 0 {
                    for (d, &q) in row[geo.pad..].iter_mut().zip(line) {
                        *d = convert(q);
                    }
                } else {
                    for (x, &q) in line.iter().enumerate() {
                        let col = x + geo.pad;
                        row[col / 2 + (col % 2) * self.half] = convert(q);
                    }
                }
            }
        }
    }

    /// Where padded column `col` sits in a row.
    fn column(&self, col: usize) -> usize {
        if self.half == 0 {
            col
        } else {
            col / 2 + (col % 2) * self.half
        }
    }

    /// Packs block `block` as `[k/group][NR][group]` (taps past `k` and pixels past the image
    /// are `T::default()`).
    fn pack_groups(&self, geo: &Im2col, block: usize, group: usize, dst: &mut [T]) {
        let k = geo.c * geo.kh * geo.kw;
        let first = block * NR;
        let cols = NR.min(geo.pixels - first);
        if cols < NR || !k.is_multiple_of(group) {
            dst.fill(T::default());
        }
        let tap_row = |t: usize, oy: usize| {
            let (ci, ky) = (t / (geo.kh * geo.kw), (t / geo.kw) % geo.kh);
            (ci * self.ph + oy * geo.stride + ky) * self.row_len
        };
        let (oy, ox) = (first / geo.ow, first % geo.ow);
        if cols == NR && ox + NR <= geo.ow && geo.stride <= 2 {
            // One output row: each tap is NR contiguous values.
            for t in 0..k {
                let kx = t % geo.kw;
                let start = tap_row(t, oy) + self.column(ox * geo.stride + kx);
                let src = &self.data[start..][..NR];
                let out = &mut dst[(t / group) * NR * group + t % group..];
                for (q, &v) in src.iter().enumerate() {
                    out[q * group] = v;
                }
            }
            return;
        }
        for q in 0..cols {
            let (oy, ox) = ((first + q) / geo.ow, (first + q) % geo.ow);
            for t in 0..k {
                let kx = t % geo.kw;
                let v = self.data[tap_row(t, oy) + self.column(ox * geo.stride + kx)];
                dst[(t / group) * NR * group + q * group + t % group] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_panels_interleave_tap_pairs_and_zero_the_edges() {
        // m = 5 rows (two panels, the second with one real row), k = 3 taps (two pairs).
        let w: Vec<i16> = (1..=15).collect();
        let p = PackedWeights::pack(&w, 5, 3);
        assert_eq!((p.panels(), p.pairs()), (2, 2));
        let first = p.panel(0);
        // pair 0: rows 0..4, taps (0, 1)
        assert_eq!(&first[..8], &[1, 2, 4, 5, 7, 8, 10, 11]);
        // pair 1: tap 2 then the zero tap
        assert_eq!(&first[8..], &[3, 0, 6, 0, 9, 0, 12, 0]);
        assert_eq!(
            p.panel(1),
            &[13, 14, 0, 0, 0, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn im2col_block_pads_with_zero_and_removes_the_zero_point() {
        // 1 channel 2×2 image, 3×3 kernel, padding 1: pixel 0's taps around (0, 0).
        let geo = Im2col {
            c: 1,
            h: 2,
            w: 2,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
            ow: 2,
            pixels: 4,
        };
        let mut dst = vec![7i16; 5 * NR * 2];
        geo.pack_block(&[10, 11, 12, 13], 10, 0, &mut dst);
        let tap = |t: usize, q: usize| dst[(t / 2) * NR * 2 + q * 2 + t % 2];
        let pixel0: Vec<i16> = (0..9).map(|t| tap(t, 0)).collect();
        assert_eq!(pixel0, [0, 0, 0, 0, 0, 1, 0, 2, 3]);
        let pixel3: Vec<i16> = (0..9).map(|t| tap(t, 3)).collect();
        assert_eq!(pixel3, [0, 1, 0, 2, 3, 0, 0, 0, 0]);
        assert_eq!(tap(9, 0), 0, "the odd tap past k is zero");
        assert_eq!(tap(0, 4), 0, "pixels past the image are zero");
        let mut padded = PaddedImage::default();
        padded.fill(&geo, &[10, 11, 12, 13], 10);
        let mut again = vec![-5i16; 5 * NR * 2];
        padded.pack_block(&geo, 0, &mut again);
        assert_eq!(again, dst, "the padded copy packs the same block");
        let mut raw = PaddedImageU8::default();
        raw.fill(&geo, &[10, 11, 12, 13], 10);
        let mut quads = vec![9u8; 3 * NR * 4];
        raw.pack_block(&geo, 0, &mut quads);
        let tap = |t: usize, q: usize| quads[(t / 4) * NR * 4 + q * 4 + t % 4];
        let pixel0: Vec<u8> = (0..9).map(|t| tap(t, 0)).collect();
        assert_eq!(
            pixel0,
            [10, 10, 10, 10, 10, 11, 10, 12, 13],
            "padding is the zero-point"
        );
        assert_eq!((tap(9, 0), tap(0, 4)), (0, 0));
    }

    #[test]
    fn s8_panels_hold_tap_quads_and_row_sums() {
        let w: Vec<i16> = (0..10).map(|v| v - 3).collect(); // m = 2, k = 5
        let p = PackedWeightsS8::pack(&w, 2, 5).expect("fits i8");
        assert_eq!((p.panels(), p.quads()), (1, 2));
        let panel = p.panel(0);
        assert_eq!(&panel[..8], &[-3, -2, -1, 0, 2, 3, 4, 5]);
        assert_eq!(&panel[16..24], &[1, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(p.row_sums(), &[-5, 20]);
        assert!(PackedWeightsS8::pack(&[200], 1, 1).is_none());
    }
}

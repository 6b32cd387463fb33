//! The dense inference convolution on the padded grid: `y[n] = epilogue(W · cols)`, with the
//! columns copied as whole runs from a padded, phase-split copy of the image.
//!
//! Gathering columns output position by output position ([`super::conv_inference`]) spends
//! its time on bookkeeping at every row edge (a fifth of ResNet-18's forward). Instead each
//! image is copied once, zero-padded and split into its `sh × sw` stride phases (for stride 2:
//! even rows and columns, even rows and odd columns, …), each `Hq × Wq`. Through tap `(i, j)`
//! the input is then phase `(i mod sh, j mod sw)` read from `(i div sh)·Wq + j div sw` on, and
//! output `(oh, ow)` sits at position `oh·Wq + ow` of a grid `Wq` wide: a tile of grid positions
//! has, for each `(ci, i, j)`, one contiguous run of input as its column row. One `gemm` over
//! all `C_in·KH·KW` rows computes the tile (`Wq − OW` columns per grid row are computed and
//! dropped, which is why [`pays`] wants them few); its valid columns then go through the
//! epilogue into the output. Same products and sums as the gathered path.

use rayon::prelude::*;

use super::conv_inference::{ConvGeometry, OutPtr};
use super::epilogue::Epilogue;

/// Column values per tile at most (512 KiB of `f32`): copied, then multiplied while in L2.
const TILE_VALUES: usize = 1 << 17;

/// The padded, phase-split layout of one image: `C_in · sh · sw` planes of `hq × wq`.
struct Phases {
    hq: usize,
    wq: usize,
}

impl Phases {
    fn new(g: &ConvGeometry) -> Self {
        let ([oh, ow], [kh, kw], [sh, sw]) = (g.output, g.kernel, g.stride);
        let wp = (g.input[1] + g.padding[1]).max((ow.max(1) - 1) * sw + kw);
        Self {
            // The rows every tap of every output row reads.
            hq: oh + (kh - 1) / sh,
            wq: wp.div_ceil(sw),
        }
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }
}

/// Whether the grid pays over gathering columns position by position: at most a fifth more
/// grid columns than outputs (the 7×7 maps of ResNet's last stage gather).
pub(super) fn pays(g: &ConvGeometry) -> bool {
    Phases::new(g).wq * 5 <= g.output[1] * 6
}

/// Image `x` (`[C_in, H, W]`) padded and phase-split into `buf`: plane `(ci·sh + fi)·sw + fj`
/// holds `x[ci, a·sh + fi − ph, b·sw + fj − pw]` at `a·wq + b`, zero outside the input.
fn split(g: &ConvGeometry, p: &Phases, x: &[f32], buf: &mut [f32]) {
    let ([h, w], [sh, sw], [ph, pw]) = (g.input, g.stride, g.padding);
    let wq = p.wq;
    buf.par_chunks_mut(sh * sw * p.plane())
        .zip(x.par_chunks(h * w))
        .for_each(|(planes, src_plane)| {
            for (f, plane) in planes.chunks_exact_mut(p.plane()).enumerate() {
                let (fi, fj) = (f / sw, f % sw);
                // Columns b whose input column b·sw + fj − pw lies in [0, w).
                let first = pw.saturating_sub(fj).div_ceil(sw).min(wq);
                let end = (w + pw).saturating_sub(fj).div_ceil(sw).clamp(first, wq);
                for (a, row) in plane.chunks_exact_mut(wq).enumerate() {
                    row[..first].fill(0.0);
                    row[end..].fill(0.0);
                    let Some(ih) = (a * sh + fi).checked_sub(ph).filter(|&ih| ih < h) else {
                        row[first..end].fill(0.0);
                        continue;
                    };
                    if first == end {
                        continue;
                    }
                    let src = &src_plane[ih * w + first * sw + fj - pw..];
                    if sw == 1 {
                        row[first..end].copy_from_slice(&src[..end - first]);
                    } else {
                        for (d, &v) in row[first..end].iter_mut().zip(src.iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                }
            }
        });
}

/// `y = epilogue(conv2d(x, w))` as [`super::conv_inference::forward`] states it, on the grid
/// (callers check [`pays`]).
pub(super) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], e: &Epilogue, y: &mut [f32]) {
    let ([h, wd], [oh, ow]) = (g.input, g.output);
    let p = Phases::new(g);
    let threads = rayon::current_num_threads();
    let (image_in, image_out) = (g.in_channels * h * wd, g.out_channels * oh * ow);
    let split_len = g.in_channels * g.stride[0] * g.stride[1] * p.plane();
    let depth = g.in_channels * g.kernel[0] * g.kernel[1];
    // Grid positions: every output row's `wq` (the last row only up to its last output).
    let positions = (oh - 1) * p.wq + ow;
    // Tiles of at most TILE_VALUES columns; with few images, as many tiles as a multiple of
    // the threads, of about equal length (a multiple of 16, the vector width), so that no
    // thread waits for a last long tile.
    let max_len = ((TILE_VALUES / depth) / 64 * 64).max(64);
    let mut tiles = positions.div_ceil(max_len);
    if g.batch < 2 * threads {
        tiles = tiles.next_multiple_of(threads);
    }
    let tile_len = positions.div_ceil(tiles).next_multiple_of(16);
    let tiles = positions.div_ceil(tile_len);
    if g.batch >= 2 * threads {
        // Whole images per task: no synchronisation inside one.
        let out = OutPtr(y.as_mut_ptr());
        x.par_chunks(image_in).enumerate().for_each(|(n, image)| {
            let mut buf = vec![0.0f32; split_len];
            split(g, &p, image, &mut buf);
            let out = OutPtr(out.at(n * image_out));
            let mut scratch = Scratch::default();
            for t in 0..tiles {
                let q0 = t * tile_len;
                let len = tile_len.min(positions - q0);
                tile(
                    &mut scratch,
                    g,
                    &p,
                    &buf,
                    w,
                    e,
                    out,
                    q0,
                    len,
                    0,
                    g.out_channels,
                );
            }
        });
        return;
    }
    // Few images: tiles of grid positions in parallel (a ResNet-18 map at 224² has 4 at least).
    let mut buf = vec![0.0f32; split_len];
    for (n, image) in x.chunks_exact(image_in).enumerate() {
        split(g, &p, image, &mut buf);
        let out = OutPtr(y[n * image_out..].as_mut_ptr());
        (0..tiles)
            .into_par_iter()
            .for_each_init(Scratch::default, |scratch, t| {
                let q0 = t * tile_len;
                let len = tile_len.min(positions - q0);
                tile(scratch, g, &p, &buf, w, e, out, q0, len, 0, g.out_channels);
            });
    }
}

/// A task's buffers, kept from tile to tile: the columns and the product.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    tile: Vec<f32>,
}

/// Grid positions `q0..q0 + len` of output channels `c0..c0 + m` of one image (`out` its first
/// output value) from its split input `buf`.
#[allow(clippy::too_many_arguments)]
fn tile(
    scratch: &mut Scratch,
    g: &ConvGeometry,
    p: &Phases,
    buf: &[f32],
    w: &[f32],
    e: &Epilogue,
    out: OutPtr,
    q0: usize,
    len: usize,
    c0: usize,
    m: usize,
) {
    let ([kh, kw], [sh, sw], [oh, ow]) = (g.kernel, g.stride, g.output);
    let (taps, plane) = (kh * kw, p.plane());
    let depth = g.in_channels * taps;
    // Column row (ci, i, j): the run of phase (i mod sh, j mod sw) of channel ci from
    // (i div sh)·wq + j div sw + q0 on.
    let Scratch { cols, tile } = scratch;
    cols.clear();
    for k in 0..depth {
        let (ci, i, j) = (k / taps, k / kw % kh, k % kw);
        let phase = (ci * sh + i % sh) * sw + j % sw;
        let at = phase * plane + (i / sh) * p.wq + j / sw + q0;
        cols.extend_from_slice(&buf[at..at + len]);
    }
    // Overwritten by the product (`read_dst` false); only its growth is zeroed.
    tile.resize(m * len, 0.0);
    // SAFETY: the product reads `m` weight rows of `depth` values (inside `w`: `c0 + m` rows),
    // the `depth × len` columns and writes the `m × len` tile, both owned here.
    unsafe {
        gemm::gemm(
            m,
            len,
            depth,
            tile.as_mut_ptr(),
            1,
            len as isize,
            false,
            w[c0 * depth..(c0 + m) * depth].as_ptr(),
            1,
            depth as isize,
            cols.as_ptr(),
            1,
            len as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (c, tile_row) in tile[..m * len].chunks_exact(len).enumerate() {
        // The tile's runs of valid columns, grid row by grid row.
        let mut q = q0;
        while q < q0 + len {
            let (r, col) = (q / p.wq, q % p.wq);
            let run_end = (r * p.wq + p.wq).min(q0 + len);
            if col < ow && r < oh {
                let n = (ow - col).min(run_end - q);
                let at = (c0 + c) * oh * ow + r * ow + col;
                // SAFETY: this task's own output run (channels and grid positions are
                // disjoint between tasks, images between calls), inside the image's output.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), n) };
                e.apply_from(c0 + c, &tile_row[q - q0..q - q0 + n], dst);
            }
            q = run_end;
        }
    }
}

//! The portable GEMM driver of the SIMD kernels: tiles `C = A · B` into [`NR`]-pixel blocks ×
//! [`MR`]-row panels ([`super::packed`]), packs each input block once into a per-thread buffer,
//! runs the microkernel over the panels, and spreads blocks (and, when the blocks are few,
//! panel ranges) over rayon's threads. The arithmetic lives in the `pack` and `tile` closures
//! an arch-specific kernel set passes in.

use std::cell::RefCell;

use super::packed::{MR, NR};
use super::threads_for;

thread_local! {
    /// One packed input block per thread, reused across calls (no allocation in steady state).
    static BLOCK: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

/// A `*mut u8` the tile closures write through; every tile owns a disjoint set of elements.
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut u8);
// SAFETY: tiles write disjoint elements (distinct (row, column) pairs), and the driver joins every
// task before the borrow the pointer came from ends.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `offset` bytes on.
    ///
    /// # Safety
    /// `offset` must lie inside the allocation the pointer came from.
    pub unsafe fn at(self, offset: usize) -> *mut u8 {
        // SAFETY: the caller keeps `offset` in bounds.
        unsafe { self.0.add(offset) }
    }
}

/// The extent of a GEMM: `rows × depth` weights in `panels` panels, a `cols`-column input packed
/// block by block into `block_len` i16 values (a byte-packed kernel views them as bytes).
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    /// Rows of `A` (output channels).
    pub rows: usize,
    /// Taps per row.
    pub depth: usize,
    /// Weight panels.
    pub panels: usize,
    /// Columns of `B` (output pixels).
    pub cols: usize,
    /// i16 values per packed input block.
    pub block_len: usize,
}

/// Runs a GEMM:
/// * `pack(block, dst)` writes input block `block` into `dst` (`extent.block_len` values) and
///   says how it packed it (a kernel may pick its packing per block);
/// * `tile(panel, block, b_block, how)` computes and stores one `MR × NR` tile.
pub fn run<P: Copy>(
    extent: Extent,
    pack: impl Fn(usize, &mut [i16]) -> P + Sync,
    tile: impl Fn(usize, usize, &[i16], P) + Sync,
) {
    let Extent {
        rows,
        depth,
        panels,
        cols,
        block_len,
    } = extent;
    let blocks = cols.div_ceil(NR);
    let threads = threads_for(rows * depth * cols);
    // Enough tasks to balance the threads: split the panels too when the blocks are few.
    let chunks = if threads == 1 {
        1
    } else {
        (4 * threads).div_ceil(blocks).clamp(1, panels)
    };
    let per_chunk = panels.div_ceil(chunks);
    let task = |t: usize| {
        let (block, chunk) = (t / chunks, t % chunks);
        BLOCK.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len() < block_len {
                buf.resize(block_len, 0);
            }
            let b = &mut buf[..block_len];
            let how = pack(block, b);
            let first = chunk * per_chunk;
            for panel in first..(first + per_chunk).min(panels) {
                tile(panel, block, b, how);
            }
        })
    };
    let tasks = blocks * chunks;
    if threads == 1 {
        (0..tasks).for_each(task);
    } else {
        super::team::parallel_for(tasks, task);
    }
}

/// Rows of panel `panel` that exist (`≤ MR`), columns of block `block` that exist (`≤ NR`).
pub fn tile_extent(rows: usize, cols: usize, panel: usize, block: usize) -> (usize, usize) {
    (MR.min(rows - panel * MR), NR.min(cols - block * NR))
}

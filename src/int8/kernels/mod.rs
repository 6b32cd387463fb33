//! The int8 kernel interface, the portable reference kernels and the default fast ones.
//!
//! Every op ([`Int8Conv2d`], [`Int8Linear`], [`crate::int8::Int8Add`], the pool) validates shapes and
//! precomputes its parameters once, then hands the hot loop to an [`Int8Kernels`]
//! implementation. [`Reference`] is plain safe Rust, written for obviousness; [`Direct`] is the
//! portable fast set; `x86_64::Avx2` (packed-GEMM convolutions over [`packed`] layouts driven by
//! [`gemm`], pair-lane depthwise, vector requantization) and `x86_64::Avx512Vnni` (channels-last
//! convolutions: NHWC GEMMs on `vpdpbusd` and a direct NHWC depthwise kernel, choosing their
//! memory formats through [`Int8Kernels::conv2d_formats`]) are picked at run time by [`Auto`].
//! All are held to [`Reference`] bit for bit on inputs in either format
//! (`tests/it/int8_kernels.rs`).
//!
//! Preconditions (checked by the ops, so kernels need not re-check): the input and output
//! slices have the lengths the op's shapes imply.

pub mod bytewise;
pub mod cache;
pub mod direct;
pub mod gemm;
pub mod level;
pub mod packed;
pub mod quantize;
pub mod reference;
pub mod team;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use cache::KernelCache;
pub use direct::Direct;
pub use reference::Reference;
#[cfg(target_arch = "x86_64")]
pub use x86_64::{Avx2, Avx512Vnni};

/// The kernels the int8 layers run by default: the fastest set this CPU runs ([`Auto`]).
pub const DEFAULT: Auto = Auto;

/// Picks the fastest kernel set at run time: [`Avx512Vnni`] on x86-64 CPUs with AVX-512 VNNI,
/// else [`Avx2`] on those with AVX2, else [`Direct`]. All sets give the same bits, so the
/// choice changes only the speed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auto;

impl Auto {
    /// The kernel set `Auto` runs on this CPU.
    pub fn resolve(self) -> &'static dyn Int8Kernels {
        self.pick().1
    }

    /// The name of the kernel set `Auto` runs on this CPU (`"avx512vnni"`, `"avx2"`, `"direct"`).
    pub fn name(self) -> &'static str {
        self.pick().0
    }

    fn pick(self) -> (&'static str, &'static dyn Int8Kernels) {
        #[cfg(target_arch = "x86_64")]
        {
            static VNNI: std::sync::OnceLock<Option<Avx512Vnni>> = std::sync::OnceLock::new();
            static AVX2: std::sync::OnceLock<Option<Avx2>> = std::sync::OnceLock::new();
            if let Some(k) = VNNI.get_or_init(Avx512Vnni::detect) {
                return ("avx512vnni", k);
            }
            if let Some(k) = AVX2.get_or_init(Avx2::detect) {
                return ("avx2", k);
            }
        }
        ("direct", &Direct)
    }
}

impl Int8Kernels for Auto {
    fn conv2d_formats(&self, op: &Int8Conv2d, shape: &[usize]) -> (MemoryFormat, MemoryFormat) {
        self.resolve().conv2d_formats(op, shape)
    }

    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        self.resolve().conv2d(op, rq, input, out)
    }

    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]) {
        self.resolve().linear(op, rq, input, out)
    }

    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]) {
        self.resolve().add(p, a, b, out)
    }

    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]) {
        self.resolve().global_avg_pool(p, input, out)
    }
}

/// The geometry of one convolution call (NCHW input, output size, kernel, stride, padding),
/// read once from the op and its input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvCall {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvCall {
    /// The call's geometry; `None` when the kernel does not fit the input (nothing to compute).
    pub(crate) fn of(op: &Int8Conv2d, input: &QTensor) -> Option<Self> {
        let s = input.shape();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let (oh, ow) = op.output_hw(h, w)?;
        let [kh, kw] = op.kernel_size();
        let spec = op.spec();
        Some(ConvCall {
            n,
            c,
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            stride: spec.stride,
            pad: spec.padding,
        })
    }
}

/// How many threads a kernel call of `macs` multiply-adds is worth: one below ~256k (thread
/// hand-off costs more than it saves on the small layers of a small input), else rayon's.
pub(crate) fn threads_for(macs: usize) -> usize {
    if macs < 1 << 18 {
        1
    } else {
        rayon::current_num_threads().max(1)
    }
}

/// At most this many tasks per thread for the kernels that split their work evenly
/// (depthwise, elementwise, linear): a thread that loses its CPU to another process (a shared
/// 2-vCPU machine) then holds up its team for one small task, not for half of the layer, as the
/// others claim the rest.
const TASKS_PER_THREAD: usize = 8;

/// How many tasks to split a kernel call of `work` units into (multiply-adds, or values of an
/// elementwise op) when a task is worth at least `min_task` of them: one when the call runs
/// on one thread ([`threads_for`]), else one to [`TASKS_PER_THREAD`] per thread. Small calls
/// (most layers at batch 1) keep one task per thread: each task costs a claim and a restart.
pub(crate) fn tasks_for(work: usize, min_task: usize) -> usize {
    match threads_for(work) {
        1 => 1,
        threads => threads * (work / (threads * min_task.max(1))).clamp(1, TASKS_PER_THREAD),
    }
}

/// Runs a whole int8 forward pass `f` on rayon's pool with every pool thread as its team
/// ([`team::on_team`]): each layer's split then costs an atomic claim instead of a hand-over
/// to sleeping workers. A plain call on a one-thread pool.
///
/// Activations are recycled within the pass ([`crate::int8::buffer::scope`]).
pub fn on_thread_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    team::on_team(|| crate::int8::buffer::scope(f))
}

/// Runs `f(index, chunk)` on `out` in chunks of `len`, in parallel when there is more than one.
pub(crate) fn for_each_block(out: &mut [u8], len: usize, f: impl Fn(usize, &mut [u8]) + Sync) {
    if out.len() <= len {
        f(0, out);
        return;
    }
    let total = out.len();
    let ptr = gemm::OutPtr(out.as_mut_ptr());
    team::parallel_for(total.div_ceil(len), |i| {
        let start = i * len;
        // SAFETY: the chunks [start, start + len) ∩ out are disjoint, and parallel_for returns
        // only once every task has run, inside the borrow of `out`.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(ptr.at(start), len.min(total - start)) };
        f(i, chunk)
    });
}

/// Bytes per task of [`elementwise`] (~30 µs): enough tasks that a thread which finishes early
/// (or lost its CPU for a while) leaves the rest to the others, few enough that claiming them
/// costs nothing.
const ELEMENTWISE_BLOCK: usize = 1 << 18;

/// Runs the elementwise kernel `f(a, b, out)` on matching chunks of three equally long slices,
/// split over threads when they are long.
pub(crate) fn elementwise(
    a: &[u8],
    b: &[u8],
    out: &mut [u8],
    f: impl Fn(&[u8], &[u8], &mut [u8]) + Sync,
) {
    let threads = threads_for(out.len());
    // One task on one thread, else a whole number per thread, each at most about
    // ELEMENTWISE_BLOCK.
    let tasks = if threads == 1 {
        1
    } else {
        out.len()
            .div_ceil(ELEMENTWISE_BLOCK)
            .next_multiple_of(threads)
    };
    let block = out.len().div_ceil(tasks).next_multiple_of(64).max(1);
    for_each_block(out, block.max(1), |i, chunk| {
        let (start, len) = (i * block, chunk.len());
        f(&a[start..][..len], &b[start..][..len], chunk)
    });
}

use super::add::AddParams;
use super::conv::Int8Conv2d;
use super::linear::Int8Linear;
use super::pool::PoolParams;
use super::requant::Requant;
use super::tensor::{MemoryFormat, QTensor};

/// A set of int8 kernels. All methods write every element of `out`.
pub trait Int8Kernels {
    /// The memory formats [`Self::conv2d`] takes its input in and writes its output in for
    /// `op` on an input of `shape` (`[n, c, h, w]`). Row-major (NCHW) both ways unless a kernel
    /// set says otherwise; the op converts an input held in another format first.
    fn conv2d_formats(&self, op: &Int8Conv2d, shape: &[usize]) -> (MemoryFormat, MemoryFormat) {
        let _ = (op, shape);
        (MemoryFormat::Contiguous, MemoryFormat::Contiguous)
    }

    /// Quantized 2-D convolution of `input` (stored in the first format of
    /// [`Self::conv2d_formats`]) into `out` (`[n, op.out_channels(), oh, ow]` with
    /// `op.output_hw(h, w)`, stored in the second), requantized by `rq`.
    fn conv2d(&self, op: &Int8Conv2d, rq: &Requant, input: &QTensor, out: &mut [u8]);

    /// Quantized linear layer: `input` is `[n, in_features]`, `out` is `[n, out_features]`.
    fn linear(&self, op: &Int8Linear, rq: &Requant, input: &QTensor, out: &mut [u8]);

    /// Elementwise quantized add of two equally long quint8 slices.
    fn add(&self, p: &AddParams, a: &[u8], b: &[u8], out: &mut [u8]);

    /// Adaptive average pooling of the `input` (either memory format) to `[n, c, 1, 1]`.
    fn global_avg_pool(&self, p: &PoolParams, input: &QTensor, out: &mut [u8]);
}

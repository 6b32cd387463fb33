//! Host-side numerics of PyTorch's `HistogramObserver` (torch 2.5.1,
//! `torch/ao/quantization/observer.py`), reproduced operation by operation in the same
//! precision as the tensor ops it uses:
//!
//! - `torch.histc(x, bins, min, max)`: bin `(int64)((x - min) * bins / (max - min))` in f32, the
//!   last bin closed, values outside `[min, max]` skipped; equal bounds widen to the data range,
//!   then to `[v - 1, v + 1]`;
//! - combining a running histogram with a new batch when the range grows (`_combine_histograms`,
//!   `_upscale_histogram`: 16× upsampling, bin mid-points mapped with `torch.bucketize` onto the
//!   new bins, `torch.bincount` with f32 weights);
//! - `_non_linear_param_search`: the quantile walk in steps of 1e-5 that stops when the L2
//!   quantization error (`_compute_quantization_error`, uniform density per bin) stops falling.
//!
//! `torch.linspace` is reproduced with its vectorised CPU kernel (16-lane AVX-512 `arange`
//! blocks, scalar tail), as PyTorch runs it with one intra-op thread on an AVX-512 machine.
//! The two reductions to a Python float (`torch.sum(histogram)` and the error's `norm.sum()`)
//! are accumulated in f64 here; they only feed comparisons.

/// Lanes of PyTorch's `Vectorized<float>` under AVX-512 dispatch.
const VEC_LANES: usize = 16;

/// Upsampling factor of `_upscale_histogram` (`self.upsample_rate`).
const UPSAMPLE_RATE: usize = 16;

/// Running histogram state of a histogram observer.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramState {
    /// Bin counts (f32, as PyTorch's buffer).
    pub histogram: Vec<f32>,
    /// Lower bound of the histogram range (`+inf` before any data).
    pub min_val: f32,
    /// Upper bound of the histogram range (`-inf` before any data).
    pub max_val: f32,
}

/// `torch.linspace(start, end, steps)` for f32 as the vectorised CPU kernel computes it.
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    let mut out = vec![0.0f32; steps];
    let block = 2 * VEC_LANES;
    let mut idx = 0usize;
    while idx + block <= steps {
        for v in 0..2 {
            let i0 = idx + v * VEC_LANES;
            let base = if i0 < halfway {
                start + step * i0 as f32
            } else {
                end - step * (steps - i0 - 1) as f32
            };
            for j in 0..VEC_LANES {
                out[i0 + j] = base + j as f32 * step;
            }
        }
        idx += block;
    }
    for (i, o) in out.iter_mut().enumerate().skip(idx) {
        *o = if i < halfway {
            start + step * i as f32
        } else {
            end - step * (steps - i - 1) as f32
        };
    }
    out
}

/// `torch.histc(values, bins, min, max)` on f32 input (CPU `histogramdd` linear-interpolation
/// kernel).
pub fn histc(values: &[f32], bins: usize, min: f32, max: f32) -> Vec<f32> {
    let mut hist = vec![0.0f32; bins];
    // histc_select_outer_bin_edges (in f64)
    let (mut left, mut right) = (f64::from(min), f64::from(max));
    if left == right && !values.is_empty() {
        let (mn, mx) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        left = f64::from(mn);
        right = f64::from(mx);
    }
    if left == right {
        left -= 1.0;
        right += 1.0;
    }
    // linspace(left, right, bins + 1): first and last edges are exactly the f32 bounds.
    let (left, right) = (left as f32, right as f32);
    for &elt in values {
        if !(elt >= left && elt <= right) {
            continue;
        }
        let pos_f = (elt - left) * bins as f32 / (right - left);
        let mut pos = pos_f as i64 as usize;
        if pos == bins {
            pos -= 1;
        }
        hist[pos] += 1.0;
    }
    hist
}

/// `torch.div(a, b, rounding_mode="floor")` for f32 (`c10::div_floor_floating`).
fn div_floor(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b; // fmod
    let mut div = (a - m) / b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv += 1.0;
        }
        floordiv
    } else {
        0.0f32.copysign(a / b)
    }
}

/// `_get_norm`: `density * (end^3 - begin^3) / 3` in f32.
fn get_norm(delta_begin: f32, delta_end: f32, density: f32) -> f32 {
    let norm = (delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3.0;
    density * norm
}

impl HistogramState {
    /// A state that has seen nothing.
    pub fn empty(bins: usize) -> Self {
        HistogramState {
            histogram: vec![0.0; bins],
            min_val: f32::INFINITY,
            max_val: f32::NEG_INFINITY,
        }
    }

    fn bins(&self) -> usize {
        self.histogram.len()
    }

    /// `HistogramObserver.forward` on the (NaN-free) batch `x`; ±inf values are dropped with a
    /// warning, as PyTorch does.
    pub fn observe(&mut self, x: &[f32]) {
        if x.is_empty() {
            return;
        }
        let finite: Vec<f32>;
        let mut x = x;
        if x.iter().any(|v| v.is_infinite()) {
            eprintln!("warning: torch.inf detected in input tensor, ignoring input");
            finite = x.iter().copied().filter(|v| v.is_finite()).collect();
            if finite.is_empty() {
                return;
            }
            x = &finite;
        }
        let (x_min, x_max) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let bins = self.bins();
        if self.min_val == f32::INFINITY || self.max_val == f32::NEG_INFINITY {
            self.min_val = x_min;
            self.max_val = x_max;
            self.histogram = histc(x, bins, x_min, x_max);
            return;
        }
        let new_min = self.min_val.min(x_min);
        let new_max = self.max_val.max(x_max);
        let update = histc(x, bins, new_min, new_max);
        if new_min == self.min_val && new_max == self.max_val {
            for (h, u) in self.histogram.iter_mut().zip(&update) {
                *h += u;
            }
        } else {
            self.histogram = self.combine_histograms(&update, new_min, new_max);
            self.min_val = new_min;
            self.max_val = new_max;
        }
    }

    /// `_combine_histograms(self.histogram, min, max, update, update_min, update_max)`.
    fn combine_histograms(&self, update: &[f32], update_min: f32, update_max: f32) -> Vec<f32> {
        let bins = self.bins();
        if update_min == self.min_val && update_max == self.max_val {
            return self
                .histogram
                .iter()
                .zip(update)
                .map(|(a, b)| a + b)
                .collect();
        }
        if self.min_val == self.max_val {
            let bin_value: f32 = update.iter().sum();
            let one = histc(&[self.min_val], bins, update_min, update_max);
            return one
                .iter()
                .zip(update)
                .map(|(o, u)| o * bin_value + u)
                .collect();
        }
        let transformed = self.upscale_histogram(update_min, update_max);
        update
            .iter()
            .zip(&transformed)
            .map(|(u, t)| u + t)
            .collect()
    }

    /// `_upscale_histogram`: maps the current histogram onto `bins` bins over
    /// `[update_min, update_max]`.
    fn upscale_histogram(&self, update_min: f32, update_max: f32) -> Vec<f32> {
        let bins = self.bins();
        let n = bins * UPSAMPLE_RATE;
        let (orig_min, orig_max) = (self.min_val, self.max_val);
        let bin_size = (orig_max - orig_min) / n as f32;
        let half = 0.5f32 * bin_size;
        let mids = linspace_f32(orig_min, orig_max, n + 1);
        let boundaries = linspace_f32(update_min, update_max, bins + 1);
        let mut out = vec![0.0f32; bins];
        for (k, &m0) in mids[..n].iter().enumerate() {
            let mid = m0 + half;
            // bucketize(right=True) - 1: number of boundaries <= mid, minus one.
            let count = boundaries.partition_point(|&b| b <= mid) as i64;
            let bucket = (count - 1).clamp(0, bins as i64 - 1) as usize;
            let weight = self.histogram[k / UPSAMPLE_RATE] / UPSAMPLE_RATE as f32;
            out[bucket] += weight;
        }
        out
    }

    /// `_compute_quantization_error(next_start_bin, next_end_bin)`.
    fn compute_quantization_error(&self, start: usize, end: usize, dst_nbins: f64) -> f64 {
        let bins = self.bins();
        let bin_width = (f64::from(self.max_val) - f64::from(self.min_val)) / bins as f64;
        let dst_bin_width = bin_width * (end as f64 - start as f64 + 1.0) / dst_nbins;
        if dst_bin_width == 0.0 {
            return 0.0;
        }
        let bw = bin_width as f32;
        let dbw = dst_bin_width as f32;
        let half = (dst_bin_width / 2.0) as f32;
        let neg_half = (-dst_bin_width / 2.0) as f32;
        let top = (dst_nbins - 1.0) as f32;
        // _get_norm(torch.tensor(-dbw/2), torch.tensor(dbw/2), density) without the density.
        let full = (half * half * half - neg_half * neg_half * neg_half) / 3.0;
        let mut total = 0.0f64;
        for (i, &h) in self.histogram.iter().enumerate() {
            let src_bin_begin = (i as i64 - start as i64) as f32 * bw;
            let src_bin_end = src_bin_begin + bw;
            let dst_bin_of_begin = div_floor(src_bin_begin, dbw).clamp(0.0, top);
            let dst_bin_of_begin_center = (dst_bin_of_begin + 0.5) * dbw;
            let dst_bin_of_end = div_floor(src_bin_end, dbw).clamp(0.0, top);
            let density = h / bw;
            let mut norm = 0.0f32;
            norm += get_norm(src_bin_begin - dst_bin_of_begin_center, half, density);
            norm += (dst_bin_of_end - dst_bin_of_begin - 1.0) * (density * full);
            let dst_bin_of_end_center = dst_bin_of_end * dbw + half;
            norm += get_norm(neg_half, src_bin_end - dst_bin_of_end_center, density);
            total += f64::from(norm);
        }
        total as f32 as f64
    }

    /// `_non_linear_param_search`: the `(new_min, new_max)` range that approximately minimises
    /// the L2 quantization error. `dst_nbins` is `2^bits` of the quantized dtype.
    pub fn non_linear_param_search(&self, dst_nbins: f64) -> (f32, f32) {
        let bins = self.bins();
        let bin_width = (self.max_val - self.min_val) / bins as f32;
        let total = self.histogram.iter().map(|&h| f64::from(h)).sum::<f64>() as f32 as f64;
        let mut acc = 0.0f64;
        let csum: Vec<f32> = self
            .histogram
            .iter()
            .map(|&h| {
                acc += f64::from(h);
                acc as f32
            })
            .collect();

        let stepsize = 1e-5f64;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start_bin, mut end_bin) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            let (mut l, mut r) = (start_bin, end_bin);
            let lo = (next_alpha * total) as f32;
            let hi = (next_beta * total) as f32;
            while l < end_bin && csum[l] < lo {
                l += 1;
            }
            while r > start_bin && csum[r] > hi {
                r -= 1;
            }
            let (mut next_start_bin, mut next_end_bin) = (start_bin, end_bin);
            if (l - start_bin) > (end_bin - r) {
                next_start_bin = l;
                alpha = next_alpha;
            } else {
                next_end_bin = r;
                beta = next_beta;
            }
            if next_start_bin == start_bin && next_end_bin == end_bin {
                continue;
            }
            let norm = self.compute_quantization_error(next_start_bin, next_end_bin, dst_nbins);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start_bin;
            end_bin = next_end_bin;
        }
        let new_min = self.min_val + bin_width * start_bin as f32;
        let new_max = self.min_val + bin_width * (end_bin + 1) as f32;
        (new_min, new_max)
    }
}

//! Float reductions that vectorise: `f32` partial sums in independent lanes (a strict
//! left-to-right sum is one long dependency chain the compiler may not reorder), added up in
//! `f64` at the end.

/// Lanes per sum: two AVX2 registers of `f32`.
pub(super) const LANES: usize = 16;

/// `Σ f(a[i], b[i])` over the common length of `a` and `b`.
#[inline(always)]
pub fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; LANES];
    let (a_body, a_tail) = a.split_at(n - n % LANES);
    let (b_body, b_tail) = b.split_at(n - n % LANES);
    for (a, b) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for l in 0..LANES {
            lanes[l] += f(a[l], b[l]);
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(&a, &b)| f(a, b)).sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// `Σ f(a[i])`.
#[inline(always)]
pub fn lane_sum_of(a: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    lane_sum(a, a, |v, _| f(v))
}

#[cfg(test)]
mod tests {
    use super::lane_sum;

    #[test]
    fn lane_sum_is_the_sum() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 + i as f32).collect();
            let want: f64 = a.iter().zip(&b).map(|(&a, &b)| (a * b) as f64).sum();
            assert!((lane_sum(&a, &b, |a, b| a * b) - want).abs() <= 1e-6 * want.abs().max(1.0));
        }
    }
}

//! Kernel micro-benchmarks: MobileNetV2's hot convolution shapes (width 1.0, 224×224 input,
//! batch 1) on every kernel set this CPU runs. Criterion reports throughput in multiply-adds
//! per second (`elem/s` = MAC/s); the machine's peak for the instruction the AVX2 GEMM is built
//! on (`vpmaddwd`, 16 i16 MACs per instruction) is measured first and printed beside them.
//!
//! `cargo bench --bench int8_kernels`

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn_qat::data::SplitMix64;
use burn_qat::int8::{
    Auto, Conv2dSpec, Direct, Engine, Int8Conv2d, Int8Kernels, QParamsPt, QTensor, QWeight,
    WeightQParams,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// (name, in channels, input size, out channels, kernel, stride, groups)
const SHAPES: [(&str, usize, usize, usize, usize, usize, usize); 8] = [
    ("stem_3x3s2_3to32_224", 3, 224, 32, 3, 2, 1),
    ("pw_32to16_112", 32, 112, 16, 1, 1, 1),
    ("pw_24to144_56", 24, 56, 144, 1, 1, 1),
    ("pw_144to24_56", 144, 56, 24, 1, 1, 1),
    ("pw_960to160_7", 960, 7, 160, 1, 1, 1),
    ("pw_320to1280_7", 320, 7, 1280, 1, 1, 1),
    ("dw_3x3s1_144_56", 144, 56, 144, 3, 1, 144),
    ("dw_3x3s2_96_112", 96, 112, 96, 3, 2, 96),
];

fn conv(
    rng: &mut SplitMix64,
    c: usize,
    oc: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> Int8Conv2d {
    let shape = [oc, c / groups, k, k];
    let data = (0..shape.iter().product::<usize>())
        .map(|_| rng.below(256) as u8 as i8)
        .collect();
    let weight = QWeight::from_raw(
        data,
        &shape,
        WeightQParams::PerChannel {
            scales: vec![0.002; oc],
            zero_points: vec![0; oc],
        },
    )
    .expect("weight");
    let spec = Conv2dSpec {
        stride,
        padding: k / 2,
        groups,
        relu: true,
    };
    let qp = |s, z| QParamsPt::new(s, z).expect("qparams");
    Int8Conv2d::new(
        weight,
        Some(vec![0.01; oc]),
        spec,
        qp(0.02, 7),
        qp(0.05, 0),
        Engine::X86,
    )
    .expect("conv")
}

/// The measured peak of `vpmaddwd` + `vpaddd` (16 MACs), one thread, in G MAC/s; `None`
/// without AVX2. Eight independent chains, each feeding its sum back as the next multiplicand
/// (so nothing can be hoisted out of the loop).
#[cfg(target_arch = "x86_64")]
fn vpmaddwd_peak() -> Option<f64> {
    #[target_feature(enable = "avx2")]
    fn run(iters: usize) -> i32 {
        use std::arch::x86_64::*;
        let b = _mm256_set1_epi16(black_box(1));
        let one = _mm256_set1_epi32(black_box(1));
        let mut acc = [0, 1, 2, 3, 4, 5, 6, 7].map(|v| _mm256_set1_epi32(v));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_add_epi32(_mm256_madd_epi16(*x, b), one);
            }
        }
        let mut sum = [0i32; 8];
        for x in acc {
            // SAFETY: sum holds 8 i32.
            unsafe { _mm256_storeu_si256(sum.as_mut_ptr() as *mut __m256i, x) };
        }
        sum.iter().sum()
    }
    if !is_x86_feature_detected!("avx2") {
        return None;
    }
    let iters = 20_000_000;
    let start = Instant::now();
    // SAFETY: AVX2 was detected above.
    black_box(unsafe { run(black_box(iters)) });
    Some((iters * 8 * 16) as f64 / start.elapsed().as_secs_f64() / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn vpmaddwd_peak() -> Option<f64> {
    None
}

fn bench(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    match vpmaddwd_peak() {
        Some(peak) => println!(
            "peak vpmaddwd: {peak:.1} G MAC/s per thread, {:.1} on {threads} threads",
            peak * threads as f64
        ),
        None => println!("no AVX2: no vpmaddwd peak"),
    }
    let mut rng = SplitMix64::new(5);
    let mut group = c.benchmark_group("int8_kernels");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let sets: [(&str, &dyn Int8Kernels); 2] = [(Auto.name(), &Auto), ("direct", &Direct)];
    for (name, ic, size, oc, k, stride, groups) in SHAPES {
        let op = conv(&mut rng, ic, oc, k, stride, groups);
        let input: Vec<u8> = (0..ic * size * size)
            .map(|_| rng.below(256) as u8)
            .collect();
        let x = QTensor::from_raw(
            input,
            &[1, ic, size, size],
            QParamsPt::new(0.02, 7).expect("qp"),
        )
        .expect("input");
        let (oh, ow) = op.output_hw(size, size).expect("fits");
        let macs = oc * oh * ow * (ic / groups) * k * k;
        group.throughput(Throughput::Elements(macs as u64));
        for (set, kernels) in sets {
            group.bench_function(format!("{name}/{set}"), |b| {
                b.iter(|| op.forward_with(kernels, black_box(&x)).expect("conv"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Kernel micro-benchmarks: MobileNetV2's (width 1.0) and ResNet-18's hot convolution shapes
//! (224×224 input, batch 1) on every kernel set this CPU runs, and ResNet-18's at batch 32
//! (`…_b32`) on the automatic set. Criterion reports throughput in multiply-adds
//! per second (`elem/s` = MAC/s); the machine's peaks for the instructions the GEMMs are built
//! on (`vpmaddwd`, 16 i16 MACs, for AVX2; `vpdpbusd`, 64 u8 × s8 MACs, for AVX-512 VNNI) are
//! measured first and printed beside them.
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
const SHAPES: [(&str, usize, usize, usize, usize, usize, usize); 18] = [
    ("stem_3x3s2_3to32_224", 3, 224, 32, 3, 2, 1),
    ("pw_32to16_112", 32, 112, 16, 1, 1, 1),
    ("pw_16to96_112", 16, 112, 96, 1, 1, 1),
    ("pw_24to144_56", 24, 56, 144, 1, 1, 1),
    ("pw_96to576_14", 96, 14, 576, 1, 1, 1),
    ("pw_144to24_56", 144, 56, 24, 1, 1, 1),
    ("pw_960to160_7", 960, 7, 160, 1, 1, 1),
    ("pw_320to1280_7", 320, 7, 1280, 1, 1, 1),
    ("dw_3x3s1_144_56", 144, 56, 144, 3, 1, 144),
    ("dw_3x3s2_96_112", 96, 112, 96, 3, 2, 96),
    ("dw_3x3s1_576_14", 576, 14, 576, 3, 1, 576),
    // ResNet-18
    ("r18_stem_7x7s2_3to64_224", 3, 224, 64, 7, 2, 1),
    ("r18_3x3s1_64_56", 64, 56, 64, 3, 1, 1),
    ("r18_3x3s2_64to128_56", 64, 56, 128, 3, 2, 1),
    ("r18_3x3s1_128_28", 128, 28, 128, 3, 1, 1),
    ("r18_3x3s1_256_14", 256, 14, 256, 3, 1, 1),
    ("r18_3x3s1_512_7", 512, 7, 512, 3, 1, 1),
    ("r18_1x1s2_64to128_56", 64, 56, 128, 1, 2, 1),
];

/// The shapes also run at batch 32 (on [`Auto`] only: the portable set would take seconds per
/// pass), where the batch is one more dimension to split between threads.
const BATCH32: [&str; 7] = [
    "r18_stem_7x7s2_3to64_224",
    "r18_3x3s1_64_56",
    "r18_3x3s2_64to128_56",
    "r18_3x3s1_128_28",
    "r18_3x3s1_256_14",
    "r18_3x3s1_512_7",
    "r18_1x1s2_64to128_56",
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
    // SAFETY: `g_macs_per_s` calls `run` only after AVX2 was detected.
    g_macs_per_s(is_x86_feature_detected!("avx2"), 8 * 16, |iters| unsafe {
        run(iters)
    })
}

/// G MAC/s of `run(iters)` doing `macs_per_iter` multiply-adds per iteration; `None` unless
/// `available`.
#[cfg(target_arch = "x86_64")]
fn g_macs_per_s(available: bool, macs_per_iter: usize, run: impl Fn(usize) -> i32) -> Option<f64> {
    if !available {
        return None;
    }
    let iters = 20_000_000;
    let start = Instant::now();
    black_box(run(black_box(iters)));
    Some((iters * macs_per_iter) as f64 / start.elapsed().as_secs_f64() / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn vpmaddwd_peak() -> Option<f64> {
    None
}

/// The measured peak of 512-bit `vpdpbusd` (64 u8 × s8 MACs), one thread, in G MAC/s; `None`
/// without AVX-512 VNNI. Sixteen independent accumulator chains: with eight, the instruction's
/// latency bounds the loop on Zen 5 (half its throughput).
#[cfg(target_arch = "x86_64")]
fn vpdpbusd_peak() -> Option<f64> {
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn run(iters: usize) -> i32 {
        use std::arch::x86_64::*;
        let a = _mm512_set1_epi8(black_box(1));
        let b = _mm512_set1_epi8(black_box(1));
        let mut acc: [__m512i; 16] = std::array::from_fn(|v| _mm512_set1_epi32(v as i32));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, a, b);
            }
        }
        acc.iter()
            .map(|&x| _mm512_reduce_add_epi32(x))
            .fold(0, i32::wrapping_add)
    }
    let vnni = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni");
    // SAFETY: `g_macs_per_s` calls `run` only after AVX-512 F and VNNI were detected.
    g_macs_per_s(vnni, 16 * 64, |iters| unsafe { run(iters) })
}

#[cfg(not(target_arch = "x86_64"))]
fn vpdpbusd_peak() -> Option<f64> {
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
    if let Some(peak) = vpdpbusd_peak() {
        println!(
            "peak vpdpbusd (512-bit): {peak:.1} G MAC/s per thread, {:.1} on {threads} threads",
            peak * threads as f64
        );
    }
    let mut rng = SplitMix64::new(5);
    let mut group = c.benchmark_group("int8_kernels");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let mut sets: Vec<(&str, &dyn Int8Kernels)> = vec![(Auto.name(), &Auto), ("direct", &Direct)];
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<Option<burn_qat::int8::kernels::Avx2>> =
            std::sync::OnceLock::new();
        // Beside a faster automatic choice, the AVX2 set too (what AVX2-only CPUs run).
        if let Some(k) = AVX2.get_or_init(burn_qat::int8::kernels::Avx2::detect)
            && Auto.name() != "avx2"
        {
            sets.push(("avx2", k));
        }
    }
    let batch32 = SHAPES
        .iter()
        .filter(|s| BATCH32.contains(&s.0))
        .map(|&s| (32, s));
    for (batch, (name, ic, size, oc, k, stride, groups)) in
        SHAPES.map(|s| (1, s)).into_iter().chain(batch32)
    {
        let op = conv(&mut rng, ic, oc, k, stride, groups);
        // BENCH_INPUT_MAX=127: inputs as a reduce_range model's (the u8 × s8 kernels' case).
        let max = std::env::var("BENCH_INPUT_MAX").map_or(255, |v| v.parse().unwrap_or(255));
        let input: Vec<u8> = (0..batch * ic * size * size)
            .map(|_| rng.below(256) as u8 & max)
            .collect();
        let x = QTensor::from_raw(
            input,
            &[batch, ic, size, size],
            QParamsPt::new(0.02, 7).expect("qp"),
        )
        .expect("input");
        let (oh, ow) = op.output_hw(size, size).expect("fits");
        let macs = batch * oc * oh * ow * (ic / groups) * k * k;
        group.throughput(Throughput::Elements(macs as u64));
        let (name, sets) = if batch == 1 {
            (name.to_string(), &sets[..])
        } else {
            (format!("{name}_b{batch}"), &sets[..1])
        };
        for &(set, kernels) in sets {
            // The input in the format the set reads (as the previous layer of a model writes
            // it), so that a conversion is not timed with the kernel.
            let x = x.to_format(kernels.conv2d_formats(&op, x.shape()).0);
            // Outputs recycled as in a model's pass: fresh ones would time page faults and
            // zeroing (25 MB at batch 32, and a visible share of the small-k layers at 1).
            burn_qat::int8::buffer::scope(|| {
                group.bench_function(format!("{name}/{set}"), |b| {
                    b.iter(|| op.forward_with(kernels, black_box(&x)).expect("conv"))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

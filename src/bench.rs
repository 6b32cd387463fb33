//! Inference latency of a checkpoint of any torchvision family ([`TorchvisionConfig`]), the
//! library side of `burn-qat bench`.
//!
//! The CLI (and `scripts/bench_peers.py`, which compares the crate with PyTorch and
//! onnxruntime on the same weights) needs one number per configuration that means the same as
//! the peers' numbers: the wall time of one forward pass on a fixed batch, output read back to
//! host memory, after warm-up, on a known number of threads. [`bench_model`] measures
//! exactly that; [`BenchReport`] prints it as a table line or one JSON object.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

use crate::infer::{WeightsKind, load_weights_with_engine};
use crate::int8::Engine;
use crate::limits::{check_fits, product};
use crate::models::{Arch, TorchvisionConfig, TorchvisionModel, check_image_batch};
use crate::nn::ImageClassifier;
use crate::ops::has_cpu_kernels;
use crate::{Error, Result};

/// What to time: the input batch, the thread count and how many passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Images per forward pass.
    pub batch: usize,
    /// Height and width of the square input (at least 32, as the models need).
    pub input_size: usize,
    /// Threads of the rayon global pool, which both burn-flex's float kernels (gemm with
    /// `Parallelism::Rayon(0)`) and the crate's int8 kernels use; `None` keeps rayon's default
    /// (`RAYON_NUM_THREADS`, else one per logical CPU).
    pub threads: Option<usize>,
    /// Untimed passes first (allocator, caches, packed weights).
    pub warmup: usize,
    /// Timed passes.
    pub iters: usize,
}

impl Default for BenchOptions {
    /// One 224×224 image, rayon's default threads, 3 warm-up and 20 timed passes.
    fn default() -> Self {
        BenchOptions {
            batch: 1,
            input_size: 224,
            threads: None,
            warmup: 3,
            iters: 20,
        }
    }
}

impl BenchOptions {
    /// Rejects values that would make the measurement meaningless, before any work is done,
    /// for any model: the input must be at least 32×32, as every family but ShuffleNetV2 needs
    /// ([`bench_model`] checks the input against its own model's limit instead).
    pub fn validate(&self) -> Result<()> {
        self.validate_run()?;
        check_image_batch("the model", &self.input_shape())
    }

    /// The input batch's shape, `[batch, 3, input_size, input_size]`.
    fn input_shape(&self) -> [usize; 4] {
        [self.batch, 3, self.input_size, self.input_size]
    }

    /// [`validate`](Self::validate) without the input size: iterations and threads.
    fn validate_run(&self) -> Result<()> {
        if self.iters == 0 {
            return Err(Error::Config("--iters must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(Error::Config("--threads must be at least 1".into()));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(n) = self.threads.filter(|&n| n > cpus) {
            // The int8 pass runs on a spinning thread team: threads beyond the CPUs only wait
            // for a CPU, and thousands of them take minutes to start.
            return Err(Error::Config(format!(
                "--threads {n} is more than the {cpus} logical CPUs of this machine"
            )));
        }
        Ok(())
    }
}

/// The result of one benchmark: the configuration as it ran, and the latencies.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// The architecture (torchvision's builder), `None` for a configuration that is none of
    /// them unchanged.
    pub arch: Option<Arch>,
    /// `None` for the float model, else the int8 engine whose arithmetic ran.
    pub engine: Option<Engine>,
    /// The int8 kernel set that ran ([`Auto::name`](crate::int8::Auto::name): `"avx512vnni"`,
    /// `"avx2"` or `"direct"`, after any `BURN_QAT_KERNELS` cap); `None` for the float model.
    pub kernels: Option<&'static str>,
    /// Width multiplier of the model, for families that have one (MobileNetV2).
    pub width_mult: Option<f64>,
    /// Classes of the model's classifier.
    pub num_classes: usize,
    /// The options, with `threads` resolved to the pool's actual size.
    pub options: BenchOptions,
    /// Median of the timed passes, in milliseconds (mean of the two middle ones for an even
    /// count, as Python's `statistics.median`, so the peers' script computes the same statistic).
    pub median_ms: f64,
    /// Fastest timed pass, in milliseconds.
    pub min_ms: f64,
}

impl BenchReport {
    /// `"float"` or `"int8"`: which forward ran.
    pub fn path(&self) -> &'static str {
        if self.engine.is_some() {
            "int8"
        } else {
            "float"
        }
    }

    /// Throughput at the median latency.
    pub fn images_per_s(&self) -> f64 {
        self.options.batch as f64 * 1000.0 / self.median_ms
    }

    /// One JSON object on one line (written by hand: the binary has no JSON dependency).
    /// `engine` is `null` for the float model, `arch` for a configuration that is no
    /// torchvision builder's, `width_mult` for a family without one; non-finite numbers, which
    /// JSON cannot hold, are written as `null`.
    pub fn to_json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            }
        };
        let string = |v: Option<&str>| v.map_or("null".into(), |v| format!("\"{v}\""));
        let engine = string(self.engine.map(Engine::name));
        let kernels = string(self.kernels);
        let arch = string(self.arch.map(Arch::name));
        let o = &self.options;
        format!(
            "{{\"path\":\"{}\",\"arch\":{arch},\"engine\":{engine},\"kernels\":{kernels},\
             \"width_mult\":{},\
             \"num_classes\":{},\
             \"input_size\":{},\"batch\":{},\"threads\":{},\"warmup\":{},\"iters\":{},\
             \"median_ms\":{},\"min_ms\":{},\"images_per_s\":{}}}",
            self.path(),
            self.width_mult.map_or("null".into(), num),
            self.num_classes,
            o.input_size,
            o.batch,
            o.threads.unwrap_or(0),
            o.warmup,
            o.iters,
            num(self.median_ms),
            num(self.min_ms),
            num(self.images_per_s()),
        )
    }
}

impl std::fmt::Display for BenchReport {
    /// One human-readable line: configuration, median, min and throughput.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        let path = match self.engine {
            Some(e) => format!("int8 ({e}, {})", self.kernels.unwrap_or("?")),
            None => "float".into(),
        };
        // MobileNetV2's line as before `--arch`: its width; the others name the architecture.
        let model = match (self.width_mult, self.arch) {
            (Some(w), Some(Arch::MobileNetV2) | None) => format!("width {w}"),
            (_, Some(arch)) => arch.to_string(),
            (None, None) => "custom".into(),
        };
        write!(
            f,
            "{path:<14} {model} | {}x3x{}x{} | {} threads | {} iters: median {:.3} ms, min {:.3} ms, \
             {:.1} images/s",
            o.batch,
            o.input_size,
            o.input_size,
            o.threads.unwrap_or(0),
            o.iters,
            self.median_ms,
            self.min_ms,
            self.images_per_s()
        )
    }
}

/// Sizes rayon's global pool to `threads` (`None`: rayon's default). It must run before any
/// parallel work, since the global pool is built once per process; if it already exists with
/// the requested size that is fine, with another size it is an error rather than a silently
/// mislabelled measurement. Returns the pool's size.
pub fn set_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(n) = threads {
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        if built.is_err() && rayon::current_num_threads() != n {
            return Err(Error::Config(format!(
                "cannot run on {n} threads: the thread pool of this process already has {}",
                rayon::current_num_threads()
            )));
        }
    }
    Ok(rayon::current_num_threads())
}

/// The fixed input of every benchmark, `[batch, 3, size, size]` flattened: values in [-2, 2)
/// from an integer hash of the index, so runs and peers can use the same data without an RNG.
pub fn bench_input(batch: usize, size: usize) -> Vec<f32> {
    (0..batch * 3 * size * size)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Loads `weights` as `infer` does (float on `device`, or the converted int8 model), then times
/// `options.iters` forward passes on [`bench_input`] after `options.warmup` untimed ones. Each
/// timed pass includes reading the logits back (`into_data`), so a lazily executing backend is
/// charged for its work, and for int8 the quantization of the float input (PyTorch's
/// `QuantStub`) and the dequantized output.
///
/// The thread pool is sized first ([`set_threads`]), before the checkpoint is read.
pub fn bench_model<C: TorchvisionConfig>(
    weights: &Path,
    config: &C,
    kind: WeightsKind,
    options: BenchOptions,
    device: &Device,
) -> Result<BenchReport> {
    // The model's own input limit (1×1 for ShuffleNetV2, 32×32 for the others), as `infer`.
    options.validate_run()?;
    C::Model::check_batch_shape(&options.input_shape())?;
    C::Model::check_config(config)?;
    let (b, s) = (options.batch, options.input_size);
    let flags = format!("--batch {b} --input-size {s}");
    if has_cpu_kernels(device) {
        C::Model::check_forward_size(config, b, s, s).map_err(|e| e.for_flags(&flags))?;
    } else {
        // The activations live in the GPU's memory, not the host's; the input is built here.
        check_fits(product([b as u64, 3, s as u64, s as u64, 4])).map_err(|why| {
            Error::Config(format!("{flags}: the input batch is too large: {why}"))
        })?;
    }
    let threads = set_threads(options.threads)?;
    let (model, engine) = load_weights_with_engine(weights, config, kind, device)?;
    let x = Tensor::<4>::from_data(TensorData::new(bench_input(b, s), [b, 3, s, s]), device);
    let pass = || -> Result<()> {
        let y = match engine {
            Some(_) => model.forward_int8(x.clone())?,
            None => model.forward(x.clone()),
        };
        let _ = y.into_data();
        Ok(())
    };
    for _ in 0..options.warmup {
        pass()?;
    }
    let mut times = Vec::with_capacity(options.iters);
    for _ in 0..options.iters {
        let start = Instant::now();
        pass()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let median_ms = median(&mut times);
    Ok(BenchReport {
        arch: C::Model::config_arch(config),
        engine,
        kernels: engine.map(|_| crate::int8::Auto.name()),
        width_mult: C::Model::config_width_mult(config),
        num_classes: C::Model::config_num_classes(config),
        options: BenchOptions {
            threads: Some(threads),
            ..options
        },
        median_ms,
        min_ms: times[0],
    })
}

/// Median of a non-empty sample, which it leaves sorted; the mean of the two middle values for
/// an even count.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn input_is_fixed_and_in_range() {
        let a = bench_input(2, 32);
        assert_eq!(a.len(), 2 * 3 * 32 * 32);
        assert_eq!(a, bench_input(2, 32));
        assert!(a.iter().all(|v| (-2.0..2.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1, "{mean}");
    }

    #[test]
    fn json_names_every_field() {
        let report = BenchReport {
            arch: Some(Arch::MobileNetV2),
            engine: Some(Engine::X86),
            kernels: Some("avx2"),
            width_mult: Some(0.5),
            num_classes: 10,
            options: BenchOptions {
                threads: Some(2),
                ..Default::default()
            },
            median_ms: 4.0,
            min_ms: 3.5,
        };
        assert_eq!(
            report.to_json(),
            "{\"path\":\"int8\",\"arch\":\"mobilenet_v2\",\"engine\":\"x86\",\"kernels\":\"avx2\",\
             \"width_mult\":0.5,\
             \"num_classes\":10,\
             \"input_size\":224,\"batch\":1,\"threads\":2,\"warmup\":3,\"iters\":20,\
             \"median_ms\":4,\"min_ms\":3.5,\"images_per_s\":250}"
        );
        let float = BenchReport {
            engine: None,
            kernels: None,
            ..report.clone()
        };
        assert!(float.to_json().contains(
            "\"path\":\"float\",\"arch\":\"mobilenet_v2\",\"engine\":null,\"kernels\":null"
        ));
        let resnet = BenchReport {
            arch: Some(Arch::ResNet18),
            width_mult: None,
            ..report
        };
        assert!(resnet.to_json().contains("\"width_mult\":null"));
        assert!(
            resnet.to_string().contains("resnet18 | 1x3x224x224"),
            "{resnet}"
        );
    }

    #[test]
    fn bad_options_are_config_errors() {
        let zero = BenchOptions {
            iters: 0,
            ..Default::default()
        };
        assert!(zero.validate().unwrap_err().to_string().contains("--iters"));
        let small = BenchOptions {
            input_size: 16,
            ..Default::default()
        };
        assert!(small.validate().unwrap_err().to_string().contains("32"));
        let crowd = BenchOptions {
            threads: Some(100_000),
            ..Default::default()
        };
        let msg = crowd.validate().unwrap_err().to_string();
        assert!(
            msg.contains("--threads 100000") && msg.contains("logical CPUs"),
            "{msg}"
        );
    }
}

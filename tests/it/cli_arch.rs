//! `burn-qat infer|export|bench --arch`: full-size ResNet-18, MobileNetV3-Large and
//! ShuffleNetV2 x1.0 (32 classes) run through the command line as through the library, float
//! from a torchvision-keyed `.pth` written here and int8 from the crate's own file after PTQ; a
//! checkpoint of another architecture is one line naming the file, what it is and the `--arch`
//! it does not match.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::{Device, Tensor, TensorData};
use burn_qat::convert::convert;
use burn_qat::infer::{WeightsKind, load_weights, predict};
use burn_qat::int8::Engine;
use burn_qat::io::KeyMap;
use burn_qat::io::{npy, save_int8_model};
use burn_qat::models::{
    BlockKind, MobileNetV3Config, ResNetConfig, ShuffleNetV2Config, TorchvisionConfig,
    TorchvisionModel, mobilenet_v3_key_map, shufflenet_v2_key_map,
};
use burn_qat::nn::ImageClassifier;
use burn_qat::quant::{QConfig, QuantBackend};
use burn_qat::quantize::prepare;

use crate::common::{assert_bits, assert_close, fixture_path, to_vec};
use crate::torch_save::{Storage, tensors_checkpoint};

const CLASSES: usize = 32;
/// The batch every run takes: 2 images of 64×48.
const INPUT: [usize; 4] = [2, 3, 64, 48];

fn burn_qat(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_burn-qat"));
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one line a failed run prints, checked for `needles`.
#[track_caller]
fn one_line_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
    stderr
}

/// A value in [-1, 1) from an integer hash of `(entry, i)`, so the checkpoint needs no RNG.
fn hashed(entry: usize, i: usize) -> f64 {
    let h = ((entry as u64) << 32 ^ i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    h as f64 / (1u64 << 23) as f64 - 1.0
}

/// torchvision's `resnet(...).state_dict()` layout for `config` (keys and shapes, in
/// torchvision's order): `conv1`/`bn1`, each block's `convK`/`bnK` and `downsample.0`/`.1`, `fc`.
fn torchvision_resnet_entries(config: &ResNetConfig) -> Vec<(String, Vec<usize>)> {
    let mut entries = Vec::new();
    let mut conv_bn = |conv: String, bn: String, shape: Vec<usize>| {
        let c = shape[0];
        entries.push((format!("{conv}.weight"), shape));
        for stat in ["weight", "bias", "running_mean", "running_var"] {
            entries.push((format!("{bn}.{stat}"), vec![c]));
        }
        entries.push((format!("{bn}.num_batches_tracked"), vec![]));
    };
    conv_bn("conv1".into(), "bn1".into(), vec![config.width, 3, 7, 7]);
    for (s, stage) in config.block_configs().iter().enumerate() {
        for (i, block) in stage.iter().enumerate() {
            let p = format!("layer{}.{i}.", s + 1);
            let (cin, width, out) = (block.in_channels, block.width(), block.out_channels());
            let convs = match block.kind {
                BlockKind::Basic => vec![vec![out, cin, 3, 3], vec![out, out, 3, 3]],
                BlockKind::Bottleneck => vec![
                    vec![width, cin, 1, 1],
                    vec![width, width / block.groups, 3, 3],
                    vec![out, width, 1, 1],
                ],
            };
            for (k, shape) in convs.into_iter().enumerate() {
                conv_bn(
                    format!("{p}conv{}", k + 1),
                    format!("{p}bn{}", k + 1),
                    shape,
                );
            }
            if block.has_downsample() {
                let shape = vec![out, cin, 1, 1];
                conv_bn(
                    format!("{p}downsample.0"),
                    format!("{p}downsample.1"),
                    shape,
                );
            }
        }
    }
    let last = config.last_channels();
    entries.push(("fc.weight".into(), vec![config.num_classes, last]));
    entries.push(("fc.bias".into(), vec![config.num_classes]));
    entries
}

/// Writes a torchvision-keyed float ResNet checkpoint with hashed values (see
/// [`write_hashed_pth`]).
fn write_resnet_pth(config: &ResNetConfig, path: &Path) {
    write_hashed_pth(&torchvision_resnet_entries(config), path);
}

/// Writes a float checkpoint of `entries` (keys and shapes) with hashed values: weights uniform
/// with variance `1/fan_in`, batch norms with scales near 1 and variances in [0.5, 2].
fn write_hashed_pth(entries: &[(String, Vec<usize>)], path: &Path) {
    let values: Vec<Vec<f64>> = entries
        .iter()
        .enumerate()
        .map(|(e, (key, shape))| {
            let n = shape.iter().product::<usize>();
            let fan_in = shape.iter().skip(1).product::<usize>().max(1) as f64;
            let u = |i| hashed(e, i);
            (0..n)
                .map(|i| match key.rsplit('.').next().unwrap() {
                    "num_batches_tracked" => 100.0,
                    "running_var" => 1.25 + 0.75 * u(i),
                    "running_mean" | "bias" => 0.1 * u(i),
                    _ if shape.len() == 1 => 1.0 + 0.5 * u(i), // BN scale
                    _ => u(i) * (3.0 / fan_in).sqrt(),
                })
                .collect()
        })
        .collect();
    let table: Vec<(&str, Storage, &[usize], &[f64])> = entries
        .iter()
        .zip(&values)
        .map(|((key, shape), v)| {
            let storage = match key.ends_with("num_batches_tracked") {
                true => Storage::Long,
                false => Storage::Float,
            };
            (key.as_str(), storage, shape.as_slice(), v.as_slice())
        })
        .collect();
    std::fs::write(path, tensors_checkpoint(&table)).unwrap();
}

fn input_batch() -> Vec<f32> {
    burn_qat::bench::bench_input(INPUT[0], INPUT[2])[..INPUT.iter().product::<usize>()].to_vec()
}

fn resnet18() -> ResNetConfig {
    ResNetConfig::resnet18().with_num_classes(CLASSES)
}

/// `infer --arch resnet18` on a torchvision float `.pth` and on the crate's int8 file of the
/// same model (PTQ x86) gives the library's logits; `export` and `bench --json` run on both.
#[test]
fn resnet18_infer_export_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let float_pth = dir.path().join("r18.pth");
    write_resnet_pth(&resnet18(), &float_pth);
    let int8_file = infer_export_and_bench("resnet18", &resnet18(), &float_pth, dir.path());

    // The crate's int8 ResNet file given as MobileNetV2 (the default --arch) says what it is.
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let out = burn_qat(
        &["infer", "--quantized"],
        &[("--weights", &int8_file), ("--input", &x), ("--output", &y)],
    );
    let msg = one_line_error(
        &out,
        &[
            "ResNet/ResNeXt checkpoint (--arch resnet18)",
            "does not match --arch mobilenet_v2",
        ],
    );
    assert!(msg.contains(&int8_file.display().to_string()), "{msg}");
}

/// Writes a torchvision-keyed float checkpoint of `model`'s layout with hashed values (see
/// [`write_hashed_pth`]): its tensors' paths renamed by `map` (the family's torchvision key map,
/// read backwards), in PyTorch's shapes.
fn write_torchvision_pth<M: burn::module::Module>(model: &M, map: &KeyMap, path: &Path) {
    use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot};
    let entries: Vec<(String, Vec<usize>)> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .iter()
        .map(|t| (map.to_pytorch(&t.name), t.shape.to_vec()))
        .collect();
    write_hashed_pth(&entries, path);
}

/// Full-size `mobilenet_v3_large` and `shufflenet_v2_x1_0` (32 classes, torchvision's
/// initialisation, written as torchvision's `.pth`): the same runs as ResNet-18's, and each
/// family's int8 file given as another family is named.
#[test]
fn mobilenet_v3_and_shufflenet_v2_infer_export_and_bench() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let mnv3 = MobileNetV3Config::large().with_num_classes(CLASSES);
    let mnv3_pth = dir.path().join("mnv3.pth");
    let map = mobilenet_v3_key_map(&mnv3);
    write_torchvision_pth(&mnv3.init(&device).unwrap(), &map, &mnv3_pth);
    let mnv3_int8 = infer_export_and_bench("mobilenet_v3_large", &mnv3, &mnv3_pth, dir.path());

    let shuffle = ShuffleNetV2Config::x1_0().with_num_classes(CLASSES);
    let shuffle_pth = dir.path().join("shuffle.pth");
    let map = shufflenet_v2_key_map(&shuffle);
    write_torchvision_pth(&shuffle.init(&device).unwrap(), &map, &shuffle_pth);
    let shuffle_int8 =
        infer_export_and_bench("shufflenet_v2_x1_0", &shuffle, &shuffle_pth, dir.path());

    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let classes = CLASSES.to_string();
    let cases = [
        (
            &mnv3_int8,
            "shufflenet_v2_x1_0",
            "MobileNetV3 checkpoint (--arch mobilenet_v3_large)",
        ),
        (
            &shuffle_int8,
            "mobilenet_v3_large",
            "ShuffleNetV2 checkpoint (--arch shufflenet_v2_x0_5 or shufflenet_v2_x1_0",
        ),
        (
            &mnv3_pth,
            "mobilenet_v3_small",
            "MobileNetV3 checkpoint (--arch mobilenet_v3_large)",
        ),
    ];
    for (weights, arch, what) in cases {
        let quantized = weights.extension().is_some_and(|e| e == "int8");
        let mut args = vec!["infer", "--arch", arch, "--num-classes", classes.as_str()];
        if quantized {
            args.push("--quantized");
        }
        let out = burn_qat(
            &args,
            &[("--weights", weights), ("--input", &x), ("--output", &y)],
        );
        let wanted = format!("does not match --arch {arch}");
        let msg = one_line_error(&out, &[what, wanted.as_str()]);
        assert!(msg.contains(&weights.display().to_string()), "{msg}");
    }
}

/// `infer --arch arch --num-classes 32` on the torchvision float `.pth` at `float_pth` (of
/// `config`) and on the crate's int8 file of the same model (PTQ x86, written in `dir` and
/// returned) gives the library's logits; `export` and `bench --json` run on both.
fn infer_export_and_bench<C: TorchvisionConfig>(
    arch: &str,
    config: &C,
    float_pth: &Path,
    dir: &Path,
) -> PathBuf {
    let int8_file = dir.join(format!("{arch}.int8"));
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    let device = Device::flex();
    let data = input_batch();
    npy::write_f32(&x, &data, &INPUT).unwrap();
    let classes = CLASSES.to_string();
    let model_flags = ["--arch", arch, "--num-classes", classes.as_str()];
    let infer = |weights: &Path, extra: &[&str]| {
        let args: Vec<&str> = ["infer"]
            .iter()
            .chain(&model_flags)
            .chain(extra)
            .copied()
            .collect();
        burn_qat(
            &args,
            &[("--weights", weights), ("--input", &x), ("--output", &y)],
        )
    };

    // Float: the CLI's logits are the library's on the same file.
    assert_ok(&infer(float_pth, &[]));
    let got = npy::read_f32(&y).unwrap();
    assert_eq!(got.shape, [2, CLASSES]);
    let model = load_weights(float_pth, config, WeightsKind::Float, &device).unwrap();
    let want = predict(&model, &data, &INPUT, false, &device).unwrap();
    assert_close(
        &got.data,
        &want,
        1e-5,
        1e-5,
        &format!("{arch} float logits"),
    );
    assert!(want.iter().any(|v| v.abs() > 1e-3), "logits all near zero");

    // int8: PTQ as torchvision (fuse, x86 qconfig, calibrate, convert), saved in the crate's
    // format; the CLI's logits are the converted model's, bit for bit.
    let mut model = model;
    TorchvisionModel::fuse_model(&mut model, Some(false)).unwrap();
    prepare(&mut model, QConfig::default_ptq(QuantBackend::X86), &device).unwrap();
    let x_tensor = || Tensor::<4>::from_data(TensorData::new(data.clone(), INPUT), &device);
    ImageClassifier::forward(&model, x_tensor());
    convert(&mut model, Engine::X86).unwrap();
    save_int8_model(&model, &int8_file, &Default::default()).unwrap();
    assert_ok(&infer(&int8_file, &["--quantized"]));
    let want = to_vec(ImageClassifier::forward_int8(&model, x_tensor()).unwrap());
    let got = npy::read_f32(&y).unwrap().data;
    assert_bits(&got, &want, &format!("{arch} int8 logits"));

    // export and bench take --arch the same way.
    for (weights, extra, path) in [
        (float_pth, &[][..], "float"),
        (int8_file.as_path(), &["--quantized"], "int8"),
    ] {
        let onnx = dir.join(format!("{arch}_{path}.onnx"));
        let args: Vec<&str> = ["export"]
            .iter()
            .chain(&model_flags)
            .chain(extra)
            .copied()
            .collect();
        assert_ok(&burn_qat(
            &args,
            &[("--weights", weights), ("--output", &onnx)],
        ));
        assert!(
            std::fs::metadata(&onnx).unwrap().len() > 1000,
            "{arch} {path}: ONNX file"
        );
        let bench = [
            "bench",
            "--input-size",
            "32",
            "--threads",
            "1",
            "--warmup",
            "0",
        ];
        let args: Vec<&str> = bench
            .iter()
            .chain(&model_flags)
            .chain(extra)
            .copied()
            .collect();
        let args: Vec<&str> = args.into_iter().chain(["--iters", "1", "--json"]).collect();
        let out = burn_qat(&args, &[("--weights", weights)]);
        assert_ok(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["arch"], arch, "{v}");
        assert_eq!(v["path"], path, "{v}");
        assert!(v["width_mult"].is_null(), "{v}");
        assert_eq!(v["num_classes"], CLASSES, "{v}");
    }
    int8_file
}

/// A checkpoint of another architecture, float or int8, torchvision's or a builder of the same
/// family: one line naming the file, what it is, and the `--arch` it does not match.
#[test]
fn checkpoints_of_another_arch_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let r18 = dir.path().join("r18.pth");
    write_resnet_pth(&resnet18(), &r18);
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    npy::write_f32(&x, &input_batch(), &INPUT).unwrap();
    let run = |weights: &Path, flags: &[&str]| {
        let args: Vec<&str> = ["infer"].iter().chain(flags).copied().collect();
        burn_qat(
            &args,
            &[("--weights", weights), ("--input", &x), ("--output", &y)],
        )
    };
    let mnv2_float = fixture_path("mobilenet_v2_w025.pth");
    let mnv2_int8 = fixture_path("int8_models/mobilenet_v2_qnnpack_w025.pth");
    let resnet_int8 = fixture_path("resnet/resnet_basic_fbgemm.pth");
    let cases: [(&PathBuf, &[&str], &[&str]); 5] = [
        // A ResNet-18 given as the default MobileNetV2.
        (
            &r18,
            &["--num-classes", "32"],
            &["(--arch resnet18)", "does not match --arch mobilenet_v2"],
        ),
        // The same family, another builder.
        (
            &r18,
            &["--arch", "resnet50", "--num-classes", "32"],
            &["(--arch resnet18)", "does not match --arch resnet50"],
        ),
        // MobileNetV2, float and int8, given as ResNet-18.
        (
            &mnv2_float,
            &["--arch", "resnet18", "--num-classes", "10"],
            &["MobileNetV2 checkpoint", "does not match --arch resnet18"],
        ),
        (
            &mnv2_int8,
            &["--arch", "resnet18", "--quantized", "--num-classes", "10"],
            &["MobileNetV2 checkpoint", "does not match --arch resnet18"],
        ),
        // torchvision's int8 ResNet (a small one, of no builder) given as MobileNetV2.
        (
            &resnet_int8,
            &["--quantized", "--engine", "x86", "--num-classes", "32"],
            &[
                "ResNet/ResNeXt checkpoint of no torchvision builder",
                "does not match --arch mobilenet_v2",
            ],
        ),
    ];
    for (weights, flags, needles) in cases {
        let msg = one_line_error(&run(weights, flags), needles);
        assert!(msg.contains(&weights.display().to_string()), "{msg}");
        assert!(!y.exists(), "{flags:?}: wrote an output");
    }

    // Flags that do not apply.
    for arch in ["resnet18", "mobilenet_v3_large", "shufflenet_v2_x1_0"] {
        let out = run(&r18, &["--arch", arch, "--width-mult", "0.5"]);
        one_line_error(
            &out,
            &["--width-mult 0.5 applies to mobilenet_v2 only", arch],
        );
    }
    // Sizes are checked for ResNet before anything is allocated, as for MobileNetV2.
    let huge = [
        "--arch",
        "resnet18",
        "--batch",
        "4294967296",
        "--input-size",
        "4294967296",
    ];
    let args: Vec<&str> = ["bench"].iter().chain(&huge).copied().collect();
    let out = burn_qat(&args, &[("--weights", &r18)]);
    one_line_error(
        &out,
        &[
            "--batch 4294967296 --input-size 4294967296",
            "ResNet",
            "overflows",
        ],
    );
    one_line_error(
        &run(&r18, &["--arch", "resnet34"]),
        &["unknown architecture 'resnet34'", "resnext101_64x4d"],
    );
}

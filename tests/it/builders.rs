//! The torchvision-shaped builders (`models::resnet18(weights, progress, quantize)`, the classic
//! `mobilenet_v2(pretrained, progress, quantize)`), without network: weights are looked up in
//! a temporary `BURN_QAT_CACHE` and torch.hub's cache (`TORCH_HOME`), and downloads go to a
//! loopback mirror nobody listens on (`BURN_QAT_DOWNLOAD_BASE`), so nothing is downloaded even
//! on a machine with network access. The environment is set for a child process of this test
//! binary, not changed in the shared process.

use std::path::Path;
use std::process::Command;

use burn::tensor::{Device, Tensor};
use burn_qat::convert::converted_engine;
use burn_qat::int8::Engine;
use burn_qat::models::{
    MobileNetV2Config, MobileNetV3LargeWeights, MobileNetV3SmallWeights, ResNet18Weights,
    ResNet50Weights, ShuffleNetV2x1_0Weights, Weights, mobilenet_v2, mobilenet_v3_large,
    mobilenet_v3_small, resnet18, resnet50, shufflenet_v2_x0_5, shufflenet_v2_x1_0,
};
use burn_qat::nn::Activation;
use burn_qat::nn::ImageClassifier;

use crate::common::fixture_path;

const CHILD: &str = "BURN_QAT_BUILDERS_CHILD";

/// Runs `name` alone in a child process with the cache variables pointing into `dir`.
fn run_child(name: &str, dir: &Path) {
    let filter = crate::test_name(module_path!(), name);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([filter.as_str(), "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("BURN_QAT_CACHE", dir.join("cache"))
        .env("TORCH_HOME", dir.join("torch"))
        .env("BURN_QAT_DOWNLOAD_BASE", "http://127.0.0.1:9/models")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{filter}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn expect_err<T>(result: burn_qat::Result<T>, needles: &[&str]) -> String {
    let msg = match result {
        Ok(_) => panic!("expected an error with {needles:?}"),
        Err(e) => e.to_string(),
    };
    for needle in needles {
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    }
    msg
}

/// Offline error, cache and torch.hub lookups with files placed there, and the checks made
/// before any lookup.
#[test]
fn pretrained_weights_come_from_the_cache_or_fail_offline() {
    if std::env::var_os(CHILD).is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::fs::create_dir_all(dir.path().join("torch/hub/checkpoints")).unwrap();
        return run_child(
            "pretrained_weights_come_from_the_cache_or_fail_offline",
            dir.path(),
        );
    }
    let device = Device::flex();
    let cache = std::path::PathBuf::from(std::env::var_os("BURN_QAT_CACHE").unwrap());
    let hub =
        std::path::PathBuf::from(std::env::var_os("TORCH_HOME").unwrap()).join("hub/checkpoints");

    // Nothing cached: the download (from the mirror) fails at once, saying what to do.
    let float = Some(ResNet18Weights::ImageNet1kV1);
    let msg = expect_err(
        resnet18(float, false, false, &device),
        &[
            "127.0.0.1:9/models/resnet18-f37072fd.pth",
            "--weights FILE.pth",
        ],
    );
    assert!(
        msg.contains(&cache.join("resnet18-f37072fd.pth").display().to_string()),
        "{msg}"
    );
    assert!(
        !cache.join("resnet18-f37072fd.pth").exists(),
        "a partial download was kept"
    );

    // A file in the cache is used: a damaged one fails torch.hub's hash check, naming it.
    let damaged = cache.join("resnet18-f37072fd.pth");
    std::fs::write(&damaged, b"not the weights").unwrap();
    let msg = expect_err(
        resnet18(float, false, false, &device),
        &["does not start with f37072fd"],
    );
    assert!(msg.contains(&damaged.display().to_string()), "{msg}");
    // So is one in torch.hub's cache.
    let in_hub = hub.join("resnet50-0676ba61.pth");
    std::fs::write(&in_hub, b"not the weights").unwrap();
    let msg = expect_err(
        resnet50(Some(ResNet50Weights::ImageNet1kV1), false, false, &device),
        &["does not start with 0676ba61"],
    );
    assert!(msg.contains(&in_hub.display().to_string()), "{msg}");

    // An int8 checkpoint in the cache (a name without a hash, as torchvision's first ones) is
    // loaded from there: this small ResNet is not a ResNet-18, which the loader says, naming
    // the cached file.
    let int8 = cache.join("resnet18_fbgemm_16fa66dd.pth");
    std::fs::copy(fixture_path("resnet/resnet_basic_fbgemm.pth"), &int8).unwrap();
    let weights = Some(ResNet18Weights::ImageNet1kFbgemmV1);
    let msg = expect_err(
        resnet18(weights, false, true, &device),
        &["checkpoint does not match"],
    );
    assert!(msg.contains(&int8.display().to_string()), "{msg}");

    // Checked before any lookup: weights of the other precision, and a class count the
    // weights do not have (torchvision's `verify` and `_ovewrite_named_param`).
    expect_err(
        resnet18(float, false, true, &device),
        &["float weights", "without quantize"],
    );
    expect_err(
        resnet18(weights, false, false, &device),
        &["int8 weights", "quantize = true"],
    );
    let ten = MobileNetV2Config::new().with_num_classes(10);
    expect_err(
        mobilenet_v2(true, false, false, &ten, &device),
        &["1000 classes", "10"],
    );
}

/// Without weights: the float model with ReLU6 replaced (as torchvision's quantizable builders
/// do), and with `quantize` torchvision's `quantize_model` on the family's default backend.
#[test]
fn builders_without_weights_replace_relu_and_quantize() {
    let device = Device::flex();
    let config = MobileNetV2Config::new().with_width_mult(0.25);
    let float = mobilenet_v2(false, false, false, &config, &device).unwrap();
    assert_eq!(float.stem.activation, Activation::Relu);
    assert!(float.stem.bn.is_some(), "not fused without quantize");
    let q = mobilenet_v2(false, false, true, &config, &device).unwrap();
    assert_eq!(converted_engine(&q).unwrap(), Engine::Qnnpack);
    let r18 = resnet18(None, false, true, &device).unwrap();
    assert_eq!(converted_engine(&r18).unwrap(), Engine::X86);
    let x = Tensor::<4>::ones([1, 3, 64, 64], &device);
    assert_eq!(r18.forward_int8(x).unwrap().dims(), [1, 1000]);
}

/// MobileNetV3's and ShuffleNetV2's builders: without weights, `quantize` runs `quantize_model`
/// on the family's default backend (qnnpack, fbgemm/x86) and the int8 model runs; weights of
/// the other precision are refused before any lookup (mobilenet_v3_small has only float ones).
#[test]
fn mobilenet_v3_and_shufflenet_v2_builders() {
    let device = Device::flex();
    let x = || Tensor::<4>::ones([1, 3, 64, 64], &device);
    let large = mobilenet_v3_large(None, false, true, &device).unwrap();
    assert_eq!(converted_engine(&large).unwrap(), Engine::Qnnpack);
    let y = large.forward_int8(x()).unwrap();
    assert_eq!(y.dims(), [1, 1000]);
    let small = mobilenet_v3_small(None, false, false, &device).unwrap();
    assert!(small.stem.conv.bn.is_some(), "not fused without quantize");
    let shuffle = shufflenet_v2_x0_5(None, false, true, &device).unwrap();
    assert_eq!(converted_engine(&shuffle).unwrap(), Engine::X86);
    assert_eq!(shuffle.forward_int8(x()).unwrap().dims(), [1, 1000]);

    expect_err(
        mobilenet_v3_small(
            Some(MobileNetV3SmallWeights::ImageNet1kV1),
            false,
            true,
            &device,
        ),
        &["MobileNet_V3_Small_Weights.IMAGENET1K_V1", "float weights"],
    );
    expect_err(
        mobilenet_v3_large(
            Some(MobileNetV3LargeWeights::ImageNet1kQnnpackV1),
            false,
            false,
            &device,
        ),
        &["int8 weights", "quantize = true"],
    );
    expect_err(
        shufflenet_v2_x1_0(
            Some(ShuffleNetV2x1_0Weights::ImageNet1kV1),
            false,
            true,
            &device,
        ),
        &["float weights"],
    );
    // The backends torchvision lists for the int8 weights.
    let qnnpack = MobileNetV3LargeWeights::ImageNet1kQnnpackV1.info();
    assert_eq!(
        qnnpack.file_name(),
        "mobilenet_v3_large_qnnpack-5bcacf28.pth"
    );
    assert_eq!(
        qnnpack.backend,
        Some(burn_qat::quant::QuantBackend::Qnnpack)
    );
    let fbgemm = ShuffleNetV2x1_0Weights::ImageNet1kFbgemmV1.info();
    assert_eq!(fbgemm.file_name(), "shufflenetv2_x1_fbgemm-1e62bb32.pth");
    assert_eq!(fbgemm.backend, Some(burn_qat::quant::QuantBackend::Fbgemm));
}

//! Datasets and transforms: the embedded MNIST digits, ImageFolder, CIFAR-10, the
//! preprocessing against torchvision (`scripts/gen_fixtures.py`, `transforms`), the seeded
//! augmentation, and the shipped float MNIST checkpoint.

use crate::common::{Fixture, assert_close, to_vec};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qat::data::{
    AffineParams, EmbeddedMnist, Image, Normalize, RandomAffine, SplitMix64, Transform,
    load_cifar10, load_image_folder, train_test_split,
};
use burn_qat::models::MobileNetV2Config;
use burn_qat::nn::ImageClassifier;
use burn_store::{BurnpackStore, ModuleSnapshot};

#[test]
fn embedded_mnist_has_5000_labelled_digits_and_splits_reproducibly() {
    let data = EmbeddedMnist::load().unwrap();
    assert_eq!(data.len(), 5000);
    let mut counts = [0usize; 10];
    data.labels.iter().for_each(|&l| counts[l] += 1);
    assert!(counts.iter().all(|&c| c > 300), "{counts:?}");
    assert!(data.images.iter().all(|i| i.pixels.len() == 784));
    let (train, test) = train_test_split(&data, 0.2, 7);
    assert_eq!((train.len(), test.len()), (4000, 1000));
    let (train2, _) = train_test_split(&data, 0.2, 7);
    assert_eq!(train.labels, train2.labels);
    // Shuffled: the sorted-by-label file order is gone.
    assert_ne!(&test.labels[..10], &[test.labels[0]; 10]);
}

fn image_from(fx: &Fixture, key: &str) -> Image {
    let shape = fx.shape(key);
    Image {
        pixels: fx.i64(key).iter().map(|&v| v as u8).collect(),
        height: shape[0],
        width: shape[1],
        channels: shape[2],
    }
}

#[test]
fn transforms_match_torchvision() {
    let fx = Fixture::load("transforms.safetensors");
    let grey = Transform {
        resize: Some([32, 32]),
        center_crop: None,
        normalize: Normalize::MNIST,
    };
    let rgb = Transform {
        resize: Some([48, 44]),
        center_crop: Some([40, 40]),
        normalize: Normalize::IMAGENET,
    };
    for (name, t) in [("grey", grey), ("rgb", rgb)] {
        let out = t.apply(&image_from(&fx, &format!("{name}.image"))).unwrap();
        assert_close(&out, &fx.f32(&format!("{name}.out")), 1e-5, 1e-5, name);
    }
}

#[test]
fn batches_are_nchw_tensors() {
    let data = EmbeddedMnist::load().unwrap();
    let t = Transform {
        resize: Some([32, 32]),
        center_crop: None,
        normalize: Normalize::MNIST,
    };
    let images: Vec<&Image> = data.images.iter().take(4).collect();
    let x = t.batch(&images, &Device::flex()).unwrap();
    assert_eq!(x.dims(), [4, 3, 32, 32]);
    assert!(to_vec(x).iter().all(|v| v.is_finite()));
}

fn write_png(path: &std::path::Path, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(5, 4, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_reads_classes_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    for (class, color) in [("zebra", [255, 0, 0]), ("ant", [0, 255, 0])] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        for i in 0..2 {
            write_png(&dir.path().join(class).join(format!("{i}.png")), color);
        }
    }
    let data = load_image_folder(dir.path()).unwrap();
    assert_eq!(data.classes, vec!["ant", "zebra"]);
    assert_eq!(data.labels, vec![0, 0, 1, 1]);
    assert_eq!(&data.images[0].pixels[..3], &[0, 255, 0]);
    assert_eq!((data.images[0].height, data.images[0].width), (4, 5));
}

/// Images are decoded by their bytes, not their extension: a PNG named `.JPG` reads as a PNG.
#[test]
fn image_folder_decodes_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cat");
    std::fs::create_dir(&class).unwrap();
    let png = class.join("0.png");
    write_png(&png, [9, 99, 199]);
    std::fs::rename(&png, class.join("0.JPG")).unwrap();
    let data = load_image_folder(dir.path()).unwrap();
    assert_eq!(&data.images[0].pixels[..3], &[9, 99, 199]);
}

#[test]
fn image_folder_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = load_image_folder(&missing).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");

    let err = load_image_folder(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no class sub-directories"), "{err}");

    let class = dir.path().join("cat");
    std::fs::create_dir(&class).unwrap();
    let err = load_image_folder(dir.path()).unwrap_err().to_string();
    assert!(err.contains("cat") && err.contains("no images"), "{err}");

    std::fs::write(class.join("broken.png"), b"not a png").unwrap();
    let err = load_image_folder(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("broken.png") && err.contains("unreadable image"),
        "{err}"
    );
}

#[test]
fn cifar10_binary_records_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Two records: label 3 with R plane 10, G 20, B 30; label 9 all zero.
    let mut bytes = vec![3u8];
    for v in [10u8, 20, 30] {
        bytes.extend(std::iter::repeat_n(v, 1024));
    }
    bytes.push(9);
    bytes.extend(std::iter::repeat_n(0u8, 3072));
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let data = load_cifar10(dir.path(), true).unwrap();
    assert_eq!(data.labels, vec![3, 9]);
    assert_eq!(&data.images[0].pixels[..6], &[10, 20, 30, 10, 20, 30]);
    assert_eq!(data.classes[3], "cat");

    std::fs::write(dir.path().join("test_batch.bin"), &bytes[..100]).unwrap();
    let err = load_cifar10(dir.path(), true).unwrap_err().to_string();
    assert!(
        err.contains("test_batch.bin") && err.contains("records"),
        "{err}"
    );
    let err = load_cifar10(dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("data_batch_1.bin"), "{err}");
}

fn mnist_transform() -> Transform {
    Transform {
        resize: Some([32, 32]),
        center_crop: None,
        normalize: Normalize::MNIST,
    }
}

#[test]
fn random_affine_center_pads_and_fit_is_the_transform_resize() {
    let data = EmbeddedMnist::load().unwrap();
    let canvas = RandomAffine::identity([32, 32]);
    let raw = mnist_transform();
    let exact = Transform {
        resize: None,
        ..raw.clone()
    };
    // One grey level after normalisation: `fit` rounds to 8 bits.
    let level = 1.0 / 255.0 / Normalize::MNIST.std[0];
    for image in data.images.iter().step_by(500) {
        // `center`: `Pad(2)`, the pixels themselves.
        let padded = canvas.center(image);
        assert_eq!((padded.height, padded.width, padded.channels), (32, 32, 1));
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside {
                    image.pixels[(y - 2) * 28 + x - 2]
                } else {
                    0
                };
                assert_eq!(padded.pixels[y * 32 + x], want, "({y}, {x})");
            }
        }
        // `fit`: the bilinear `Resize(32)` of `Transform`.
        let fitted = canvas.fit(image);
        let want = raw.apply(image).unwrap();
        let got = exact.apply(&fitted).unwrap();
        assert_close(&got, &want, 0.5 * level + 1e-5, 0.0, "fit vs resize");
    }
    // Same size: the pixels themselves.
    let same = RandomAffine::identity([28, 28]);
    assert_eq!(same.center(&data.images[0]), data.images[0]);
    assert_eq!(same.fit(&data.images[0]), data.images[0]);
}

/// A 4×4 grey image, black but for one white pixel at (`row`, `col`).
fn dot(row: usize, col: usize) -> Image {
    let mut pixels = vec![0u8; 16];
    pixels[row * 4 + col] = 255;
    Image {
        pixels,
        height: 4,
        width: 4,
        channels: 1,
    }
}

#[test]
fn random_affine_rotates_counter_clockwise_shifts_and_scales() {
    let affine = RandomAffine::identity([4, 4]);
    let turn = AffineParams {
        degrees: 90.0,
        ..AffineParams::IDENTITY
    };
    // Counter-clockwise on screen: top-right goes to top-left.
    assert_eq!(affine.warp(&dot(0, 3), &turn), dot(0, 0));
    let shift = AffineParams {
        shift: [1.0, 2.0],
        ..AffineParams::IDENTITY
    };
    assert_eq!(affine.warp(&dot(1, 1), &shift), dot(3, 2));
    // Off the canvas: black.
    assert!(
        affine
            .warp(&dot(3, 3), &shift)
            .pixels
            .iter()
            .all(|&p| p == 0)
    );
    // Scale 2 about the centre: the 2×2 middle block fills the canvas, fading bilinearly
    // into the black around it at the border.
    let mut block = Image {
        pixels: vec![0u8; 16],
        ..dot(0, 0)
    };
    for i in [5, 6, 9, 10] {
        block.pixels[i] = 240;
    }
    let zoom = AffineParams {
        scale: 2.0,
        ..AffineParams::IDENTITY
    };
    #[rustfmt::skip]
    let want = vec![
        135, 180, 180, 135,
        180, 240, 240, 180,
        180, 240, 240, 180,
        135, 180, 180, 135,
    ];
    assert_eq!(affine.warp(&block, &zoom).pixels, want);
}

#[test]
fn random_affine_is_seeded_and_stays_in_its_ranges() {
    let data = EmbeddedMnist::load().unwrap();
    let image = &data.images[1234];
    let affine = RandomAffine::MNIST_32;
    let draw = |seed| {
        let mut rng = SplitMix64::new(seed);
        (0..4)
            .map(|_| affine.apply(image, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
    // The four images of one stream differ from each other and from the plain resize.
    let images = draw(7);
    let fitted = affine.fit(image);
    for (i, a) in images.iter().enumerate() {
        assert_ne!(a, &fitted);
        assert!(images[i + 1..].iter().all(|b| b != a));
        assert_eq!((a.height, a.width), (32, 32));
    }
    // Parameters: within the ranges, and covering them.
    let mut rng = SplitMix64::new(1);
    let params: Vec<AffineParams> = (0..2000).map(|_| affine.sample(&mut rng)).collect();
    let span = |f: &dyn Fn(&AffineParams) -> f32| {
        let v: Vec<f32> = params.iter().map(f).collect();
        let lo = v.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    };
    let (d, t) = (affine.degrees, affine.translate);
    assert_eq!((d, t), (10.0, 3.0));
    for (name, (lo, hi), (want_lo, want_hi)) in [
        ("degrees", span(&|p| p.degrees), (-d, d)),
        (
            "scale",
            span(&|p| p.scale),
            (affine.scale[0], affine.scale[1]),
        ),
        ("shift x", span(&|p| p.shift[0]), (-t, t)),
        ("shift y", span(&|p| p.shift[1]), (-t, t)),
    ] {
        let margin = 0.02 * (want_hi - want_lo);
        assert!(
            lo >= want_lo && hi <= want_hi && lo < want_lo + margin && hi > want_hi - margin,
            "{name}: drawn in [{lo}, {hi}], expected to cover [{want_lo}, {want_hi}]"
        );
    }
    // MNIST_32 scales around the 28 → 32 resize: ×0.9–1.1 of 32/28.
    let fit_scale = 32.0 / 28.0;
    assert!((affine.scale[0] / fit_scale - 0.9).abs() < 1e-6);
    assert!((affine.scale[1] / fit_scale - 1.1).abs() < 1e-6);
    // No randomness: apply is the plain placement.
    let still = RandomAffine::identity([32, 32]);
    assert_eq!(
        still.apply(image, &mut SplitMix64::new(3)),
        still.center(image)
    );
    // The digit stays on the canvas: the ink changes only with the scale (×0.81–1.21).
    let ink = |i: &Image| i.pixels.iter().map(|&p| p as f64).sum::<f64>();
    for a in &images {
        let ratio = ink(a) / ink(&fitted);
        assert!((0.75..1.3).contains(&ratio), "ink ratio {ratio}");
    }
}

/// The checkpoint `examples/train_float_mnist.rs` produced with its defaults.
const FLOAT_CHECKPOINT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mobilenet_v2_mnist_float.bpk"
);

#[test]
fn shipped_float_checkpoint_loads_and_reaches_98_percent_on_the_test_split() {
    let device = Device::flex();
    let config = MobileNetV2Config::new()
        .with_num_classes(10)
        .with_width_mult(0.5);
    let mut model = config.init(&device).unwrap();
    let mut store = BurnpackStore::from_file(FLOAT_CHECKPOINT);
    let applied = model.load_from(&mut store).unwrap();
    assert!(
        applied.missing.is_empty() && applied.unused.is_empty() && applied.errors.is_empty(),
        "{applied:?}"
    );
    let data = EmbeddedMnist::load().unwrap();
    let (_, test) = train_test_split(&data, 0.2, 2026);
    let t = mnist_transform();
    let mut correct = 0;
    for start in (0..test.len()).step_by(250) {
        let end = (start + 250).min(test.len());
        let images: Vec<&Image> = test.images[start..end].iter().collect();
        let labels: Vec<i64> = test.labels[start..end].iter().map(|&l| l as i64).collect();
        let x = t.batch(&images, &device).unwrap();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [end - start]), &device);
        let pred = model.forward(x).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>() as usize;
    }
    let accuracy = correct as f64 / test.len() as f64;
    println!("float checkpoint: {correct}/1000 test digits");
    assert!(accuracy >= 0.98, "test accuracy {accuracy}");
}

/// The MobileNetV3-Large (width 0.5, reduced tail) that `examples/train_float_mnist.rs --arch
/// mobilenet_v3_large` produced (`assets/README.md`): it loads whole and classifies the test
/// split as the training run reported (98.5%).
#[test]
fn shipped_mobilenet_v3_checkpoint_loads_and_reaches_98_percent_on_the_test_split() {
    use burn_qat::finetune::{FinetuneData, accuracy, load_float_weights};
    use burn_qat::models::MobileNetV3Config;

    let device = Device::flex();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/mobilenet_v3_large_mnist_float.bpk");
    let config = MobileNetV3Config::large()
        .with_width_mult(0.5)
        .with_reduced_tail(true)
        .with_num_classes(10);
    let model = load_float_weights(config.init(&device).unwrap(), &path, "MobileNetV3").unwrap();
    let data = FinetuneData::embedded_mnist().unwrap();
    let acc = accuracy(&model, &data.test, &data.transform, false, None, &device).unwrap();
    println!("MobileNetV3-Large float checkpoint: {acc}");
    assert!(acc >= 0.98, "test accuracy {acc}");
}

/// The ResNet-18 (width 16) that `examples/train_float_mnist.rs --arch resnet18 --epochs 30`
/// produced (`assets/README.md`): it loads whole through `finetune::load_float_weights` and
/// classifies the test split as the training run reported (98.6%).
#[test]
fn shipped_resnet18_checkpoint_loads_and_reaches_98_percent_on_the_test_split() {
    use burn_qat::finetune::{FinetuneData, accuracy, load_float_weights};
    use burn_qat::models::ResNetConfig;

    let device = Device::flex();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/resnet18_mnist_float.bpk");
    let config = ResNetConfig::resnet18().with_width(16).with_num_classes(10);
    let model = load_float_weights(config.init(&device).unwrap(), &path, "ResNet-18").unwrap();
    let data = FinetuneData::embedded_mnist().unwrap();
    let acc = accuracy(&model, &data.test, &data.transform, false, None, &device).unwrap();
    println!("ResNet-18 float checkpoint: {acc}");
    assert!(acc >= 0.98, "test accuracy {acc}");
    // Another width is refused, naming the file, rather than trained from half-random weights.
    let other = ResNetConfig::resnet18().with_width(8).with_num_classes(10);
    let err = load_float_weights(other.init(&device).unwrap(), &path, "ResNet-18 width 8")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resnet18_mnist_float.bpk") && err.contains("width 8"),
        "{err}"
    );
}

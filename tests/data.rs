//! Datasets and transforms: the embedded MNIST digits, ImageFolder, CIFAR-10, and the
//! preprocessing against torchvision (`scripts/gen_fixtures.py`, `transforms`).

mod common;

use burn::tensor::Device;
use burn_qat::data::{
    EmbeddedMnist, Image, Normalize, Transform, load_cifar10, load_image_folder, train_test_split,
};
use common::{Fixture, assert_close, to_vec};

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

//! Datasets: ImageFolder directories, the CIFAR-10 binary batches and the MNIST CSV reader
//! behind the embedded digits.

use std::io::Write;
use std::path::Path;

use burn_qat::data::mnist::parse_csv_gz;
use burn_qat::data::{load_cifar10, load_image_folder};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::{expect_err, expect_err_at};

const RECORD: usize = 1 + 3 * 32 * 32;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One MNIST CSV row: 784 pixels and `label`.
fn row(pixel: u32, label: u32) -> String {
    let mut values = vec![pixel.to_string(); 784];
    values.push(label.to_string());
    values.join(",") + "\n"
}

/// A small valid PNG (4x3 RGB).
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// CRC-32 (PNG chunks), bitwise.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An image folder `root/<class>/<file>` with the given files.
fn folder(files: &[(&str, &str, &[u8])]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (class, name, bytes) in files {
        let dir = root.path().join(class);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    root
}

#[track_caller]
fn folder_err(root: &Path, needles: &[&str]) {
    expect_err_at(load_image_folder(root), root, needles);
}

#[test]
fn image_folder_control_reads() {
    let root = folder(&[("a", "0.png", &png()), ("b", "1.png", &png())]);
    let data = load_image_folder(root.path()).unwrap();
    assert_eq!((data.len(), data.classes.len()), (2, 2));
    assert_eq!((data.images[0].width, data.images[0].height), (4, 3));
}

#[test]
fn image_folder_missing_or_not_a_directory() {
    folder_err(Path::new("/nonexistent/images"), &["No such file"]);
    let root = folder(&[("a", "0.png", &png())]);
    folder_err(&root.path().join("a/0.png"), &["Not a directory"]);
}

#[test]
fn image_folder_empty() {
    let root = tempfile::tempdir().unwrap();
    folder_err(root.path(), &["no class sub-directories"]);
    std::fs::create_dir(root.path().join("cats")).unwrap();
    std::fs::write(root.path().join("cats/notes.txt"), b"no images").unwrap();
    expect_err(
        load_image_folder(root.path()),
        &["cats", "class directory holds no images"],
    );
}

#[test]
fn image_folder_corrupted_image() {
    let root = folder(&[("a", "0.png", b"GIF89a this is not a PNG")]);
    folder_err(root.path(), &["0.png", "unreadable image"]);
    let mut flipped = png();
    let n = flipped.len();
    flipped[n - 20] ^= 0xff; // inside the image data: the chunk CRC fails
    let root = folder(&[("a", "0.png", &flipped)]);
    folder_err(root.path(), &["unreadable image"]);
}

#[test]
fn image_folder_truncated_image() {
    let whole = png();
    for cut in [0, 8, 20, whole.len() / 2, whole.len() - 12] {
        let root = folder(&[("a", "0.jpg", &whole[..cut])]);
        folder_err(root.path(), &["unreadable image"]);
    }
}

#[test]
fn image_folder_huge_declared_dimensions() {
    // A PNG whose header declares 100,000 x 100,000 pixels (30 GB of RGB): refused by the
    // decoder's allocation limit before anything is allocated.
    let mut bytes = png();
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let root = folder(&[("a", "big.png", &bytes)]);
    folder_err(root.path(), &["big.png", "unreadable image", "limit"]);
}

/// A CIFAR-10 directory holding `test_batch.bin` with `bytes`.
fn cifar(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), bytes).unwrap();
    dir
}

#[test]
fn cifar10_control_reads() {
    let mut bytes = vec![0u8; 2 * RECORD];
    bytes[RECORD] = 9;
    let data = load_cifar10(cifar(&bytes).path(), true).unwrap();
    assert_eq!(data.labels, [0, 9]);
}

#[test]
fn cifar10_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    expect_err(
        load_cifar10(dir.path(), false),
        &["data_batch_1.bin", "No such file"],
    );
}

#[test]
fn cifar10_empty_and_truncated() {
    let dir = cifar(b"");
    expect_err(
        load_cifar10(dir.path(), true),
        &["0 bytes is not a whole number of 3073-byte"],
    );
    let dir = cifar(&vec![1u8; RECORD + 100]);
    expect_err(
        load_cifar10(dir.path(), true),
        &["test_batch.bin", "3173 bytes is not a whole number"],
    );
}

#[test]
fn cifar10_label_out_of_range() {
    let mut bytes = vec![0u8; 3 * RECORD];
    bytes[RECORD] = 10;
    expect_err(
        load_cifar10(cifar(&bytes).path(), true),
        &["record 1 has label 10"],
    );
}

#[test]
fn cifar10_directory_instead_of_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("test_batch.bin")).unwrap();
    expect_err(
        load_cifar10(dir.path(), true),
        &["test_batch.bin", "is a directory"],
    );
}

#[test]
fn mnist_csv_control_reads() {
    let data = parse_csv_gz(&gz((row(3, 7) + &row(255, 0)).as_bytes()), "t.csv.gz").unwrap();
    assert_eq!(data.labels, [7, 0]);
}

#[test]
fn mnist_csv_not_gzip_or_truncated() {
    expect_err(
        parse_csv_gz(b"1,2,3\n", "t.csv.gz"),
        &["t.csv.gz", "not a gzip-compressed"],
    );
    let whole = gz(row(1, 1).as_bytes());
    expect_err(
        parse_csv_gz(&whole[..whole.len() - 8], "t.csv.gz"),
        &["not a gzip-compressed"],
    );
    let mut flipped = whole.clone();
    flipped[12] ^= 0xff;
    expect_err(parse_csv_gz(&flipped, "t.csv.gz"), &["t.csv.gz"]);
}

#[test]
fn mnist_csv_wrong_shape() {
    let short = "1,2,3\n";
    expect_err(
        parse_csv_gz(&gz(short.as_bytes()), "t.csv.gz"),
        &[
            "line 1",
            "expected 785 values (784 pixels and a label), found 3",
        ],
    );
    let long = row(0, 1).trim_end().to_string() + ",4\n";
    expect_err(
        parse_csv_gz(&gz((row(0, 1) + &long).as_bytes()), "t.csv.gz"),
        &["line 2", "found 786"],
    );
}

#[test]
fn mnist_csv_wrong_values() {
    let text = row(0, 1).replacen('0', "x", 1);
    expect_err(
        parse_csv_gz(&gz(text.as_bytes()), "t.csv.gz"),
        &["line 1", "not a list of integers"],
    );
    for bad in [row(0, 12), row(300, 1)] {
        expect_err(
            parse_csv_gz(&gz(bad.as_bytes()), "t.csv.gz"),
            &["label must be 0–9 and pixels 0–255"],
        );
    }
    expect_err(
        parse_csv_gz(&gz(b"\xff\xfe,1\n"), "t.csv.gz"),
        &["line 1", "not UTF-8"],
    );
}

#[test]
fn mnist_csv_empty() {
    expect_err(parse_csv_gz(&gz(b""), "t.csv.gz"), &["t.csv.gz: no images"]);
    expect_err(parse_csv_gz(&gz(b"\n \n"), "t.csv.gz"), &["no images"]);
}

#[test]
fn mnist_csv_decompression_bomb() {
    // 64 MiB of digits without a line break, from a 64 KiB download: refused after 16 KiB.
    let bomb = gz(&vec![b'1'; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    expect_err(
        parse_csv_gz(&bomb, "bomb.csv.gz"),
        &["line 1", "longer than 16384 bytes"],
    );
}

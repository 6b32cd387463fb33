//! The embedded MNIST digits (`assets/mnist_5k.csv.gz`, 5,000 images; attribution in
//! `assets/README.md`). Needs the `mnist` feature (gzip decoding; it also keeps the 1.1 MB of
//! digits out of a build that does not use them).

use std::io::{BufRead, BufReader, Read};

use flate2::read::GzDecoder;

use super::{Image, ImageDataset};
use crate::{Error, Result};

/// The compressed CSV, compiled into the crate so that examples and tests need no download.
const MNIST_5K_CSV_GZ: &[u8] = include_bytes!("../../assets/mnist_5k.csv.gz");

/// Side of an MNIST image.
pub const MNIST_SIDE: usize = 28;

/// The 5,000 MNIST digits that ship with the crate.
pub struct EmbeddedMnist;

impl EmbeddedMnist {
    /// Decompresses and parses the embedded digits: 28×28 grey images, labels 0–9, in file
    /// order (sorted by label; shuffle with [`super::train_test_split`]).
    pub fn load() -> Result<ImageDataset> {
        parse_csv_gz(MNIST_5K_CSV_GZ, "embedded mnist_5k.csv.gz")
    }
}

/// Longest CSV line accepted: 785 values of at most 3 digits, commas and some white space.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Parses MNIST-style CSV (784 pixels then the label per row), gzip-compressed. `name` is used
/// in error messages, which give the line number.
///
/// The text is decompressed line by line (never whole), and a line longer than 16 KiB is an
/// error, so a decompression bomb costs no more memory than the images it really holds.
pub fn parse_csv_gz(bytes: &[u8], name: &str) -> Result<ImageDataset> {
    let err = |reason: String| Error::Data(format!("{name}: {reason}"));
    let mut reader = BufReader::new(GzDecoder::new(bytes));
    let pixels_per_image = MNIST_SIDE * MNIST_SIDE;
    let mut data = ImageDataset {
        classes: (0..10).map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    let mut raw = Vec::new();
    for line_no in 1.. {
        raw.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut raw)
            .map_err(|e| err(format!("not a gzip-compressed text file: {e}")))?;
        if n == 0 {
            break;
        }
        let line_err = |reason: String| err(format!("line {line_no}: {reason}"));
        if n > MAX_LINE_BYTES {
            return Err(line_err(format!(
                "longer than {MAX_LINE_BYTES} bytes (not MNIST CSV)"
            )));
        }
        let line = std::str::from_utf8(&raw).map_err(|_| line_err("not UTF-8 text".to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let values = line
            .split(',')
            .map(|v| v.trim().parse::<u16>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| line_err(format!("not a list of integers ({e})")))?;
        if values.len() != pixels_per_image + 1 {
            return Err(line_err(format!(
                "expected {} values (784 pixels and a label), found {}",
                pixels_per_image + 1,
                values.len()
            )));
        }
        let (pixels, label) = values.split_at(pixels_per_image);
        let label = label[0] as usize;
        if label > 9 || pixels.iter().any(|&p| p > 255) {
            return Err(line_err("label must be 0–9 and pixels 0–255".into()));
        }
        data.images.push(Image {
            pixels: pixels.iter().map(|&p| p as u8).collect(),
            height: MNIST_SIDE,
            width: MNIST_SIDE,
            channels: 1,
        });
        data.labels.push(label);
    }
    if data.is_empty() {
        return Err(err("no images".into()));
    }
    Ok(data)
}

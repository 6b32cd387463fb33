//! The embedded MNIST digits (`assets/mnist_5k.csv.gz`, 5,000 images; attribution in
//! `assets/README.md`).

use std::io::Read;

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

/// Parses MNIST-style CSV (784 pixels then the label per row), gzip-compressed. `name` is used
/// in error messages, which give the line number.
pub fn parse_csv_gz(bytes: &[u8], name: &str) -> Result<ImageDataset> {
    let err = |reason: String| Error::Data(format!("{name}: {reason}"));
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("not a gzip-compressed text file: {e}")))?;
    let pixels_per_image = MNIST_SIDE * MNIST_SIDE;
    let mut data = ImageDataset {
        classes: (0..10).map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line_err = |reason: String| err(format!("line {}: {reason}", line_no + 1));
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

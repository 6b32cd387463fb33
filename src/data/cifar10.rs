//! The CIFAR-10 binary format (`cifar-10-batches-bin`): records of one label byte and a
//! 32×32×3 image stored channel by channel.

use std::path::Path;

use super::{Image, ImageDataset};
use crate::{Error, Result};

const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;
/// Largest batch file read (the real ones hold 10,000 records, 30.7 MB).
const MAX_FILE_BYTES: u64 = 64 * 10_000 * RECORD as u64;
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Loads CIFAR-10 from the directory holding `data_batch_1.bin` … `data_batch_5.bin` and
/// `test_batch.bin`: the training batches, or the test batch when `test` is set. A missing
/// or truncated file, or a label above 9, is an error naming the file.
pub fn load_cifar10(dir: &Path, test: bool) -> Result<ImageDataset> {
    let files: Vec<String> = if test {
        vec!["test_batch.bin".into()]
    } else {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    };
    let mut data = ImageDataset {
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    for file in files {
        let path = dir.join(&file);
        // Refuse a file far larger than a batch (10,000 records) before reading it whole.
        let bytes = crate::io::read_file(&path, MAX_FILE_BYTES)?;
        let err = |reason: String| Error::Data(format!("{}: {reason}", path.display()));
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(err(format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
                bytes.len()
            )));
        }
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0] as usize;
            if label >= CLASSES.len() {
                return Err(err(format!("record {i} has label {label}, expected 0–9")));
            }
            // Planes R, G, B → interleaved HWC.
            let planes = &record[1..];
            let plane = SIDE * SIDE;
            let pixels = (0..plane)
                .flat_map(|p| (0..3).map(move |c| planes[c * plane + p]))
                .collect();
            data.images.push(Image {
                pixels,
                height: SIDE,
                width: SIDE,
                channels: 3,
            });
            data.labels.push(label);
        }
    }
    Ok(data)
}

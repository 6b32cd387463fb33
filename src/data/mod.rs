//! Datasets and the torchvision-style transforms the examples use: the embedded MNIST digits,
//! ImageFolder directories and the CIFAR-10 binary format, all as [`ImageDataset`]s of 8-bit
//! images, turned into normalised NCHW float batches by [`transforms`]; seeded augmentation
//! ([`affine`]) for training.
//!
//! The loaders with dependencies of their own are features: `mnist` (the embedded digits,
//! gzip-compressed) and `image-folder` (image decoding). CIFAR-10 needs none.

pub mod affine;
pub mod cifar10;
#[cfg(feature = "image-folder")]
#[cfg_attr(docsrs, doc(cfg(feature = "image-folder")))]
pub mod image_folder;
#[cfg(feature = "mnist")]
#[cfg_attr(docsrs, doc(cfg(feature = "mnist")))]
pub mod mnist;
pub mod split;
pub mod transforms;

pub use affine::{AffineParams, RandomAffine};
pub use cifar10::load_cifar10;
#[cfg(feature = "image-folder")]
pub use image_folder::load_image_folder;
#[cfg(feature = "mnist")]
pub use mnist::EmbeddedMnist;
pub use split::{SplitMix64, shuffled_indices, train_test_split};
pub use transforms::{Normalize, Transform};

/// An 8-bit image in HWC order (1 or 3 channels).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Pixel values, row-major, channels last.
    pub pixels: Vec<u8>,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Channels (1 = grey, 3 = RGB).
    pub channels: usize,
}

/// Labelled images and the names of their classes.
#[derive(Debug, Clone, Default)]
pub struct ImageDataset {
    /// The images.
    pub images: Vec<Image>,
    /// Class index of each image.
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl ImageDataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageDataset {
        ImageDataset {
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }
}

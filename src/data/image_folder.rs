//! `torchvision.datasets.ImageFolder`: one sub-directory per class (sorted by name), images in
//! any format the `image` crate reads (PNG, JPEG, BMP, GIF, WebP). Needs the `image-folder`
//! feature.

use std::path::Path;

use super::{Image, ImageDataset};
use crate::{Error, Result};

/// Loads `root/<class>/<image>` as RGB images, classes in sorted order as torchvision does.
/// A missing or empty folder, a class without images, or an unreadable image is an error that
/// names the path.
pub fn load_image_folder(root: &Path) -> Result<ImageDataset> {
    let err = |path: &Path, reason: &str| Error::Data(format!("{}: {reason}", path.display()));
    let mut classes: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(err(
            root,
            "no class sub-directories (expected root/<class>/<image>)",
        ));
    }
    let mut data = ImageDataset::default();
    for (label, class_dir) in classes.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(class_dir)
            .map_err(|e| Error::io(class_dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(err(class_dir, "class directory holds no images"));
        }
        for file in files {
            // Decoded by content, not by extension (a PNG named `.JPG` is a PNG). The
            // decoder's default limits (512 MiB) refuse huge declared dimensions before
            // allocating; its messages may span lines.
            let img = decode_by_content(&file)
                .map_err(|e| {
                    let e = e
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    err(&file, &format!("unreadable image ({e})"))
                })?
                .to_rgb8();
            if img.width() == 0 || img.height() == 0 {
                return Err(err(&file, "image has no pixels (zero width or height)"));
            }
            data.images.push(Image {
                height: img.height() as usize,
                width: img.width() as usize,
                channels: 3,
                pixels: img.into_raw(),
            });
            data.labels.push(label);
        }
        data.classes.push(
            class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(data)
}

/// torchvision's `IMG_EXTENSIONS`, restricted to the formats this crate decodes.
fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| ["png", "jpg", "jpeg", "bmp", "gif", "webp"].contains(&e.as_str()))
}

/// Opens an image and decodes it in the format its bytes show (magic numbers), whatever its
/// extension says.
fn decode_by_content(path: &Path) -> image::ImageResult<image::DynamicImage> {
    image::ImageReader::open(path)?
        .with_guessed_format()?
        .decode()
}

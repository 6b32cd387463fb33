//! torchvision-style transforms from 8-bit images to normalised float tensors:
//! `Resize` (bilinear), `CenterCrop`, grey → RGB, `ToTensor` + `Normalize`.

use burn::tensor::{Device, Tensor, TensorData};

use super::Image;
use crate::{Error, Result};

/// Per-channel `(x − mean) / std` on `[0, 1]` values (`transforms.Normalize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Channel means.
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
}

impl Normalize {
    /// ImageNet statistics, what torchvision's pretrained models expect.
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// MNIST statistics (0.1307, 0.3081), replicated over three channels.
    pub const MNIST: Normalize = Normalize {
        mean: [0.1307; 3],
        std: [0.3081; 3],
    };
}

/// The pipeline: optional resize, optional centre crop, grey replicated to RGB, normalise.
/// Output: float CHW with 3 channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// `Resize((h, w))`: bilinear with half-pixel centres and no antialiasing, as
    /// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`.
    pub resize: Option<[usize; 2]>,
    /// `CenterCrop((h, w))`, offsets rounded as torchvision's `int(round((H − h) / 2))`.
    pub center_crop: Option<[usize; 2]>,
    /// Normalisation after scaling to `[0, 1]`.
    pub normalize: Normalize,
}

impl Transform {
    /// The output side lengths `[h, w]` for an input image.
    pub fn output_size(&self, image: &Image) -> [usize; 2] {
        let size = self.resize.unwrap_or([image.height, image.width]);
        self.center_crop.unwrap_or(size)
    }

    /// Applies the pipeline to one image: CHW floats, 3 channels.
    pub fn apply(&self, image: &Image) -> Result<Vec<f32>> {
        if image.channels != 1 && image.channels != 3 {
            return Err(Error::Shape(format!(
                "images must have 1 or 3 channels, got {}",
                image.channels
            )));
        }
        // Planes in [0, 1], one per input channel.
        let plane = image.height * image.width;
        let mut planes: Vec<Vec<f32>> = (0..image.channels)
            .map(|c| {
                (0..plane)
                    .map(|p| image.pixels[p * image.channels + c] as f32 / 255.0)
                    .collect()
            })
            .collect();
        let (mut h, mut w) = (image.height, image.width);
        if let Some([rh, rw]) = self.resize {
            planes = planes
                .iter()
                .map(|p| resize_bilinear(p, h, w, rh, rw))
                .collect();
            (h, w) = (rh, rw);
        }
        if let Some([ch, cw]) = self.center_crop {
            if ch > h || cw > w {
                return Err(Error::Shape(format!(
                    "cannot centre-crop {ch}×{cw} from a {h}×{w} image"
                )));
            }
            let top = ((h - ch) as f64 / 2.0).round() as usize;
            let left = ((w - cw) as f64 / 2.0).round() as usize;
            planes = planes
                .iter()
                .map(|p| {
                    (0..ch)
                        .flat_map(|y| (0..cw).map(move |x| (y, x)))
                        .map(|(y, x)| p[(top + y) * w + left + x])
                        .collect()
                })
                .collect();
        }
        let mut out = Vec::with_capacity(3 * planes[0].len());
        for c in 0..3 {
            let src = &planes[if planes.len() == 1 { 0 } else { c }];
            let (mean, std) = (self.normalize.mean[c], self.normalize.std[c]);
            out.extend(src.iter().map(|v| (v - mean) / std));
        }
        Ok(out)
    }

    /// Applies the pipeline to a batch of same-sized images: an NCHW tensor on `device`.
    pub fn batch(&self, images: &[&Image], device: &Device) -> Result<Tensor<4>> {
        let Some(first) = images.first() else {
            return Err(Error::Shape("empty batch".into()));
        };
        let [h, w] = self.output_size(first);
        let mut data = Vec::with_capacity(images.len() * 3 * h * w);
        for image in images {
            if self.output_size(image) != [h, w] {
                return Err(Error::Shape(
                    "images of different sizes in one batch; add a resize or crop".into(),
                ));
            }
            data.extend(self.apply(image)?);
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), 3, h, w]),
            device,
        ))
    }
}

/// Bilinear resize of one plane with half-pixel centres (`align_corners=False`).
fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    // PyTorch: src = (dst + 0.5) * (in / out) - 0.5, clamped at 0; neighbours clamped to edge.
    let coords = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let ys = coords(oh, h);
    let xs = coords(ow, w);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

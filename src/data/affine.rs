//! Seeded geometric augmentation: an 8-bit image placed on a fixed-size zero canvas with a
//! random rotation, scale and shift (torchvision's `Pad` followed by `RandomAffine`, sampled
//! bilinearly), and the same placement without randomness for evaluation.
//!
//! [`RandomAffine::center`] places an image unscaled (28×28 on 32×32 is exactly
//! `transforms.Pad(2)`), [`RandomAffine::fit`] scales it to fill the canvas (for a square image,
//! the bilinear `Resize` of [`super::Transform`] up to rounding to 8 bits), and
//! [`RandomAffine::apply`] draws a random placement for training. [`RandomAffine::MNIST_32`] is
//! the augmentation of the shipped float MNIST model.

use super::{Image, SplitMix64};

/// A rotation (degrees, positive is counter-clockwise on screen, as torchvision), a scale and
/// a shift (pixels, `[x, y]`, y down) about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineParams {
    /// Rotation in degrees, counter-clockwise.
    pub degrees: f32,
    /// Scale factor (> 0); 1 keeps the size.
    pub scale: f32,
    /// Shift `[x, y]` in output pixels, applied after rotation and scaling.
    pub shift: [f32; 2],
}

impl AffineParams {
    /// No rotation, scale 1, no shift.
    pub const IDENTITY: AffineParams = AffineParams {
        degrees: 0.0,
        scale: 1.0,
        shift: [0.0, 0.0],
    };
}

/// Random affine placement on a `size` canvas: rotation uniform in `±degrees`, scale uniform
/// in `scale[0]..=scale[1]`, shift uniform in `±translate` pixels on each axis, drawn in that
/// order from a [`SplitMix64`] (four draws per image, whatever the ranges), so a seed fixes
/// every augmented image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomAffine {
    /// Canvas `[height, width]`; the input's centre goes to the canvas centre.
    pub size: [usize; 2],
    /// Largest rotation in degrees.
    pub degrees: f32,
    /// Largest shift in pixels, per axis.
    pub translate: f32,
    /// Scale range `[low, high]`.
    pub scale: [f32; 2],
}

impl RandomAffine {
    /// The training augmentation of the shipped float MNIST model
    /// (`examples/train_float_mnist.rs`, `assets/mobilenet_v2_mnist_float.bpk`): 28×28 digits
    /// scaled to fill 32×32 (×8/7, as its evaluation `Resize(32)`), then jittered by ±10°,
    /// ×0.9–1.1 and ±3 px.
    pub const MNIST_32: RandomAffine = RandomAffine {
        size: [32, 32],
        degrees: 10.0,
        translate: 3.0,
        scale: [0.9 * 32.0 / 28.0, 1.1 * 32.0 / 28.0],
    };

    /// No randomness: [`apply`](Self::apply) then equals [`center`](Self::center).
    pub fn identity(size: [usize; 2]) -> Self {
        RandomAffine {
            size,
            degrees: 0.0,
            translate: 0.0,
            scale: [1.0, 1.0],
        }
    }

    /// The parameters for the next image.
    pub fn sample(&self, rng: &mut SplitMix64) -> AffineParams {
        let degrees = rng.uniform(-self.degrees, self.degrees);
        let scale = rng.uniform(self.scale[0], self.scale[1]);
        let x = rng.uniform(-self.translate, self.translate);
        let y = rng.uniform(-self.translate, self.translate);
        AffineParams {
            degrees,
            scale,
            shift: [x, y],
        }
    }

    /// A randomly rotated, scaled and shifted copy of `image` on the canvas (training).
    pub fn apply(&self, image: &Image, rng: &mut SplitMix64) -> Image {
        self.warp(image, &self.sample(rng))
    }

    /// `image` centred on the canvas (evaluation): zero padding, or a centre crop where the
    /// canvas is smaller. Exact copies of the pixels when the size differences are even.
    pub fn center(&self, image: &Image) -> Image {
        self.warp(image, &AffineParams::IDENTITY)
    }

    /// `image` scaled to fill the canvas with its aspect ratio kept (the larger side fits),
    /// centred: for a square image, `Resize(size)` with black outside the input instead of
    /// repeated edges (the same for images with a black border, such as MNIST digits).
    pub fn fit(&self, image: &Image) -> Image {
        let scale = (self.size[0] as f32 / image.height as f32)
            .min(self.size[1] as f32 / image.width as f32);
        self.warp(
            image,
            &AffineParams {
                scale,
                ..AffineParams::IDENTITY
            },
        )
    }

    /// `image` transformed by `params` onto the canvas: every output pixel centre is mapped
    /// back into the input and sampled bilinearly, with zeros outside the input.
    pub fn warp(&self, image: &Image, params: &AffineParams) -> Image {
        let [oh, ow] = self.size;
        let (h, w, c) = (image.height, image.width, image.channels);
        let (sin, cos) = params.degrees.to_radians().sin_cos();
        let inv_scale = 1.0 / params.scale;
        let pixel = |y: isize, x: isize, ch: usize| -> f32 {
            if y < 0 || x < 0 || y as usize >= h || x as usize >= w {
                0.0
            } else {
                image.pixels[(y as usize * w + x as usize) * c + ch] as f32
            }
        };
        let mut pixels = Vec::with_capacity(oh * ow * c);
        for oy in 0..oh {
            for ox in 0..ow {
                // Output pixel centre relative to the canvas centre, minus the shift.
                let u = ox as f32 + 0.5 - ow as f32 / 2.0 - params.shift[0];
                let v = oy as f32 + 0.5 - oh as f32 / 2.0 - params.shift[1];
                // Inverse of the counter-clockwise rotation (y down) and of the scale.
                let x = (cos * u - sin * v) * inv_scale + w as f32 / 2.0 - 0.5;
                let y = (sin * u + cos * v) * inv_scale + h as f32 / 2.0 - 0.5;
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                for ch in 0..c {
                    let top = pixel(y0, x0, ch) * (1.0 - fx) + pixel(y0, x0 + 1, ch) * fx;
                    let bottom =
                        pixel(y0 + 1, x0, ch) * (1.0 - fx) + pixel(y0 + 1, x0 + 1, ch) * fx;
                    let value = top * (1.0 - fy) + bottom * fy;
                    pixels.push(value.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        Image {
            pixels,
            height: oh,
            width: ow,
            channels: c,
        }
    }
}

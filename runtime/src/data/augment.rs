//! Random transformations of training images, and the normalisation every example goes
//! through: one example at a time, from bytes to the `f32` the network reads.
//!
//! The randomness comes from the caller's generator, so the loader can make each example's
//! transformation a function of where it falls in the training run alone.

use super::Normalization;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::f32::consts::TAU;

/// Random transformations of training images, as a recipe's `data.augment` names them. Each is
/// off by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip_horizontal: bool,
    /// Shift by up to this many pixels in each direction, filling with black: torchvision's
    /// `RandomCrop(size, padding=translate)`.
    pub translate: usize,
    /// Zoom about the centre by a factor drawn uniformly from `[low, high]`.
    pub scale: Option<(f32, f32)>,
    /// Rotate about the centre by an angle drawn uniformly from `[-rotate, rotate]` degrees.
    pub rotate: f32,
    /// Add Gaussian noise of this standard deviation, in normalised units.
    pub noise: f32,
}

/// The transformation drawn for one example. Forward, it mirrors, then scales and rotates about
/// the centre, then shifts; sampling runs it backwards from each output pixel.
struct Geometry {
    flip: bool,
    dx: isize,
    dy: isize,
    scale: f32,
    /// Radians, counter-clockwise on screen.
    angle: f32,
}

impl Augment {
    /// Whether `apply` is plain normalisation.
    pub fn is_identity(&self) -> bool {
        !self.flip_horizontal && self.translate == 0 && !self.resamples() && self.noise == 0.0
    }

    /// Whether scaling or rotation is on: only they move pixels by fractions, needing
    /// interpolation.
    fn resamples(&self) -> bool {
        self.rotate != 0.0
            || self
                .scale
                .is_some_and(|(low, high)| low != 1.0 || high != 1.0)
    }

    /// One normalised, augmented example: `pixels` (bytes, channel-height-width, `shape`) to
    /// `out` (same shape). Pixels are scaled to `[0, 1]`, transformed geometrically (black
    /// outside the image), normalised per channel, then given Gaussian noise.
    pub fn apply(
        &self,
        pixels: &[u8],
        shape: [usize; 3],
        normalization: &Normalization,
        rng: &mut impl Rng,
        out: &mut [f32],
    ) {
        let [channels, height, width] = shape;
        assert_eq!(
            pixels.len(),
            channels * height * width,
            "pixels do not match the shape"
        );
        assert_eq!(
            out.len(),
            pixels.len(),
            "the output does not match the shape"
        );
        assert!(
            normalization.mean.len() == channels && normalization.std.len() == channels,
            "the normalisation has {} means and {} deviations for {channels} channels",
            normalization.mean.len(),
            normalization.std.len()
        );
        let geometry = self.draw(rng);
        if self.resamples() {
            resample(pixels, shape, &geometry, out);
        } else {
            shift(pixels, shape, &geometry, out);
        }
        let plane = height * width;
        for (channel, values) in out.chunks_exact_mut(plane.max(1)).enumerate() {
            let (mean, std) = (normalization.mean[channel], normalization.std[channel]);
            for value in values {
                *value = (*value - mean) / std;
            }
        }
        if self.noise != 0.0 {
            add_noise(out, self.noise, rng);
        }
    }

    /// Draws only what is switched on: with everything off, the generator is left untouched.
    fn draw(&self, rng: &mut impl Rng) -> Geometry {
        let flip = self.flip_horizontal && rng.random_bool(0.5);
        // `rand` samples only fixed-width integers, for results that do not depend on the platform.
        let reach = self.translate as i64;
        let mut offset = || rng.random_range(-reach..=reach) as isize;
        let (dx, dy) = if reach > 0 {
            (offset(), offset())
        } else {
            (0, 0)
        };
        // Interpolating by hand keeps a reversed or empty range from panicking.
        let scale = self
            .scale
            .map_or(1.0, |(low, high)| low + (high - low) * rng.random::<f32>());
        let angle = if self.rotate != 0.0 {
            self.rotate.to_radians() * (2.0 * rng.random::<f32>() - 1.0)
        } else {
            0.0
        };
        Geometry {
            flip,
            dx,
            dy,
            scale,
            angle,
        }
    }
}

/// One channel of an input image, black outside its bounds.
struct Plane<'a> {
    pixels: &'a [u8],
    height: usize,
    width: usize,
}

impl Plane<'_> {
    fn at(&self, y: isize, x: isize) -> f32 {
        if (0..self.height as isize).contains(&y) && (0..self.width as isize).contains(&x) {
            f32::from(self.pixels[y as usize * self.width + x as usize]) / 255.0
        } else {
            0.0
        }
    }
}

/// Fills `out` plane by plane with `value(input plane, y, x)`.
fn map_planes(
    pixels: &[u8],
    [_, height, width]: [usize; 3],
    out: &mut [f32],
    value: impl Fn(&Plane, usize, usize) -> f32,
) {
    let plane_size = (height * width).max(1);
    for (source, target) in pixels
        .chunks_exact(plane_size)
        .zip(out.chunks_exact_mut(plane_size))
    {
        let plane = Plane {
            pixels: source,
            height,
            width,
        };
        for y in 0..height {
            for x in 0..width {
                target[y * width + x] = value(&plane, y, x);
            }
        }
    }
}

/// Mirrors and shifts by whole pixels: every output value is an input value (or black), exactly.
fn shift(pixels: &[u8], shape: [usize; 3], geometry: &Geometry, out: &mut [f32]) {
    let width = shape[2] as isize;
    map_planes(pixels, shape, out, |plane, y, x| {
        let shifted_x = x as isize - geometry.dx;
        let source_x = if geometry.flip {
            width - 1 - shifted_x
        } else {
            shifted_x
        };
        plane.at(y as isize - geometry.dy, source_x)
    });
}

/// Runs the whole transformation backwards from each output pixel, sampling bilinearly.
fn resample(pixels: &[u8], shape: [usize; 3], geometry: &Geometry, out: &mut [f32]) {
    let [_, height, width] = shape;
    let centre_x = (width as f32 - 1.0) / 2.0;
    let centre_y = (height as f32 - 1.0) / 2.0;
    let (sin, cos) = geometry.angle.sin_cos();
    map_planes(pixels, shape, out, |plane, y, x| {
        let u = x as f32 - geometry.dx as f32 - centre_x;
        let v = y as f32 - geometry.dy as f32 - centre_y;
        let unrotated_x = (cos * u + sin * v) / geometry.scale + centre_x;
        let source_y = (cos * v - sin * u) / geometry.scale + centre_y;
        let source_x = if geometry.flip {
            width as f32 - 1.0 - unrotated_x
        } else {
            unrotated_x
        };
        let (left, top) = (source_x.floor(), source_y.floor());
        let (fx, fy) = (source_x - left, source_y - top);
        let (left, top) = (left as isize, top as isize);
        let upper = (1.0 - fx) * plane.at(top, left) + fx * plane.at(top, left + 1);
        let lower = (1.0 - fx) * plane.at(top + 1, left) + fx * plane.at(top + 1, left + 1);
        (1.0 - fy) * upper + fy * lower
    });
}

/// Adds Gaussian noise of standard deviation `std`, two values per Box–Muller draw.
fn add_noise(values: &mut [f32], std: f32, rng: &mut impl Rng) {
    for pair in values.chunks_mut(2) {
        // 1 - [0, 1) is (0, 1]: the logarithm stays finite.
        let radius = std * (-2.0 * (1.0 - rng.random::<f32>()).ln()).sqrt();
        let (sin, cos) = (TAU * rng.random::<f32>()).sin_cos();
        pair[0] += radius * cos;
        if let Some(second) = pair.get_mut(1) {
            *second += radius * sin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SHAPE: [usize; 3] = [2, 4, 5];

    /// Distinct, nonzero pixels, so that any moved or lost pixel shows.
    fn pixels() -> Vec<u8> {
        (1..=40).map(|value| value * 5).collect()
    }

    fn normalization() -> Normalization {
        Normalization {
            mean: vec![0.1, 0.3],
            std: vec![0.5, 2.0],
        }
    }

    fn apply(augment: &Augment, normalization: &Normalization, seed: u64) -> Vec<f32> {
        let mut out = vec![f32::NAN; 40];
        augment.apply(
            &pixels(),
            SHAPE,
            normalization,
            &mut ChaCha8Rng::seed_from_u64(seed),
            &mut out,
        );
        out
    }

    /// Pixels scaled to [0, 1], nothing else.
    fn plain() -> Vec<f32> {
        pixels()
            .iter()
            .map(|&value| f32::from(value) / 255.0)
            .collect()
    }

    /// `values` (of `SHAPE`) moved right by `dx` and down by `dy`, black where nothing lands.
    fn shifted(values: &[f32], dx: isize, dy: isize) -> Vec<f32> {
        let [channels, height, width] = SHAPE.map(|size| size as isize);
        let mut out = Vec::new();
        for channel in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let (source_x, source_y) = (x - dx, y - dy);
                    let inside = (0..width).contains(&source_x) && (0..height).contains(&source_y);
                    out.push(if inside {
                        values[((channel * height + source_y) * width + source_x) as usize]
                    } else {
                        0.0
                    });
                }
            }
        }
        out
    }

    fn mirrored(values: &[f32]) -> Vec<f32> {
        values
            .chunks(SHAPE[2])
            .flat_map(|row| row.iter().rev().copied())
            .collect()
    }

    #[test]
    fn identity_is_plain_normalisation_exactly() {
        let augment = Augment {
            scale: Some((1.0, 1.0)),
            ..Augment::default()
        };
        assert!(augment.is_identity());
        let normalization = normalization();
        let expected: Vec<f32> = plain()
            .iter()
            .enumerate()
            .map(|(i, &value)| (value - normalization.mean[i / 20]) / normalization.std[i / 20])
            .collect();
        assert_eq!(apply(&augment, &normalization, 1), expected);
        let noisy = Augment {
            noise: 0.1,
            ..Augment::default()
        };
        assert!(!noisy.is_identity());
    }

    #[test]
    fn everything_on_is_deterministic_under_a_seed() {
        let augment = Augment {
            flip_horizontal: true,
            translate: 2,
            scale: Some((0.8, 1.2)),
            rotate: 15.0,
            noise: 0.1,
        };
        let out = apply(&augment, &normalization(), 3);
        assert_eq!(out.len(), 40);
        assert!(out.iter().all(|value| value.is_finite()));
        assert_eq!(out, apply(&augment, &normalization(), 3));
        assert_ne!(out, apply(&augment, &normalization(), 4));
    }

    #[test]
    fn flipping_twice_is_the_identity() {
        let augment = Augment {
            flip_horizontal: true,
            ..Augment::default()
        };
        let mut flips = 0;
        for seed in 0..16 {
            let out = apply(&augment, &Normalization::identity(2), seed);
            if out != plain() {
                assert_eq!(mirrored(&out), plain());
                flips += 1;
            }
        }
        assert!((4..=12).contains(&flips), "{flips} flips in 16");
    }

    #[test]
    fn translation_moves_pixels_exactly() {
        let augment = Augment {
            translate: 2,
            ..Augment::default()
        };
        let offsets: Vec<(isize, isize)> = (-2..=2)
            .flat_map(|dx| (-2..=2).map(move |dy| (dx, dy)))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let out = apply(&augment, &Normalization::identity(2), seed);
            let offset = offsets
                .iter()
                .find(|&&(dx, dy)| shifted(&plain(), dx, dy) == out);
            seen.insert(*offset.expect("an exact whole-pixel shift within reach"));
        }
        assert!(seen.len() > 10, "only {seen:?}");
    }

    #[test]
    fn scaling_and_rotation_turn_about_the_centre() {
        let augment = Augment {
            scale: Some((0.5, 1.5)),
            rotate: 30.0,
            ..Augment::default()
        };
        let shape = [1, 5, 5];
        let pixels: Vec<u8> = (0..25).map(|value| value * 10).collect();
        for seed in 0..8 {
            let mut out = vec![0.0; 25];
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            augment.apply(
                &pixels,
                shape,
                &Normalization::identity(1),
                &mut rng,
                &mut out,
            );
            assert_eq!(out[12], 120.0 / 255.0, "the centre stays put");
        }
    }

    #[test]
    fn zooming_in_on_a_flat_image_keeps_it_flat() {
        let augment = Augment {
            scale: Some((2.0, 2.0)),
            ..Augment::default()
        };
        let mut out = vec![0.0; 36];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        augment.apply(
            &[200; 36],
            [1, 6, 6],
            &Normalization::identity(1),
            &mut rng,
            &mut out,
        );
        assert!(
            out.iter()
                .all(|&value| (value - 200.0 / 255.0).abs() < 1e-6),
            "{out:?}"
        );
    }

    #[test]
    fn noise_has_the_requested_deviation() {
        let augment = Augment {
            noise: 0.5,
            ..Augment::default()
        };
        let count = 64 * 64;
        let mut out = vec![0.0; count];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        augment.apply(
            &vec![0; count],
            [1, 64, 64],
            &Normalization::identity(1),
            &mut rng,
            &mut out,
        );
        let mean = out.iter().sum::<f32>() / count as f32;
        let std =
            (out.iter().map(|value| (value - mean).powi(2)).sum::<f32>() / count as f32).sqrt();
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((std - 0.5).abs() < 0.03, "std {std}");
    }
}

//! Tensor shapes of one example (the batch axis is implicit), and the window arithmetic that
//! convolution and pooling share: output extents, `same` padding, ceil mode.

use std::fmt;

/// Extents of one example: `[channels, height, width]` for images, `[features]` for vectors,
/// `[]` for the scalar loss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape(pub Vec<u64>);

/// The largest tensor netc accepts, in elements per example, so every count stays exact in u64.
pub const MAX_ELEMENTS: u64 = 1 << 40;

impl Shape {
    pub fn elements(&self) -> u64 {
        self.0.iter().product()
    }

    /// `(channels, height, width)` of an image shape.
    pub fn image(&self) -> Option<(u64, u64, u64)> {
        match self.0.as_slice() {
            [c, h, w] => Some((*c, *h, *w)),
            _ => None,
        }
    }

    /// The channel count: axis 0 of an image or of a vector.
    pub fn channels(&self) -> Option<u64> {
        match self.0.as_slice() {
            [c] | [c, _, _] => Some(*c),
            _ => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "scalar");
        }
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        write!(f, "{}", parts.join("x"))
    }
}

/// How a convolution or pooling window is padded, per axis, before it is resolved to pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    /// No padding (PyTorch's default).
    Valid,
    /// Output extent `ceil(input / stride)`; the total padding is split evenly, the odd pixel
    /// going after (bottom, right), as TensorFlow and PyTorch's `padding='same'` do.
    Same,
    /// The same count of pixels on both sides of each axis, `[height, width]`.
    Explicit([u64; 2]),
}

/// One axis of a sliding window.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub input: u64,
    pub kernel: u64,
    pub stride: u64,
    pub dilation: u64,
}

impl Window {
    /// The extent the kernel covers: `dilation * (kernel - 1) + 1`.
    pub fn span(&self) -> u64 {
        self.dilation * (self.kernel - 1) + 1
    }

    /// Pixels padded before and after.
    pub fn padding(&self, padding: Padding, axis: usize) -> (u64, u64) {
        match padding {
            Padding::Valid => (0, 0),
            Padding::Explicit(p) => (p[axis], p[axis]),
            Padding::Same => {
                let out = self.input.div_ceil(self.stride);
                let total = ((out - 1) * self.stride + self.span()).saturating_sub(self.input);
                (total / 2, total - total / 2)
            }
        }
    }

    /// The output extent, or `None` when the window does not fit in the padded input.
    /// With `ceil`, a last partial window counts if it starts inside the input or the leading
    /// padding (PyTorch's `ceil_mode`).
    pub fn output(&self, (before, after): (u64, u64), ceil: bool) -> Option<u64> {
        let padded = self.input + before + after;
        let room = padded.checked_sub(self.span())?;
        if !ceil {
            return Some(room / self.stride + 1);
        }
        let mut out = room.div_ceil(self.stride) + 1;
        if (out - 1) * self.stride >= self.input + before {
            out -= 1;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(input: u64, kernel: u64, stride: u64) -> Window {
        Window {
            input,
            kernel,
            stride,
            dilation: 1,
        }
    }

    #[test]
    fn same_padding_keeps_extent_divided_by_stride() {
        let w = window(224, 7, 2);
        let pad = w.padding(Padding::Same, 0);
        assert_eq!(pad, (2, 3));
        assert_eq!(w.output(pad, false), Some(112));
        let w = window(28, 4, 1);
        assert_eq!(w.padding(Padding::Same, 0), (1, 2));
    }

    #[test]
    fn ceil_mode_matches_pytorch() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True) on 112 gives 56; floor gives 55.
        let w = window(112, 3, 2);
        assert_eq!(w.output((0, 0), true), Some(56));
        assert_eq!(w.output((0, 0), false), Some(55));
        // A last window that would start in the trailing padding is dropped.
        let w = window(5, 2, 2);
        assert_eq!(w.output((1, 1), true), Some(3));
    }

    #[test]
    fn window_larger_than_input_has_no_output() {
        assert_eq!(window(2, 3, 1).output((0, 0), false), None);
        let dilated = Window {
            input: 5,
            kernel: 3,
            stride: 1,
            dilation: 3,
        };
        assert_eq!(dilated.output((0, 0), false), None);
    }
}

//! The built-in layers of the language: what each is called, what arguments it takes (the one
//! table that the parser's checks, `netc layers` and the README follow), and its rule — from
//! evaluated arguments and an input shape to a resolved layer, its output shape, and its
//! parameter and multiply-accumulate counts.
//!
//! Counts follow PyTorch: parameters are trainable tensors (batch norm's running statistics are
//! buffers, not parameters); multiply-accumulates are those of convolutions and dense layers,
//! the contractions, as in the GoogLeNet paper's table.

use super::args::{BoundArgs, Signature, SignatureParam};
use super::shape::{Padding, Shape, Window, MAX_ELEMENTS};
use super::value::Value;
use netc_grammar::diagnostic::Diagnostic;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Input,
    Conv,
    Depthwise,
    Dense,
    Flatten,
    MaxPool,
    AvgPool,
    BatchNorm,
    Dropout,
    Lrn,
    Relu,
    LeakyRelu,
    Sigmoid,
    Tanh,
    Softmax,
    Loss,
}

/// One parameter of a layer, for argument matching and for the reference documentation.
pub struct ParamDoc {
    pub name: &'static str,
    pub positional: bool,
    /// `None` when required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

pub struct LayerDoc {
    pub params: &'static [ParamDoc],
    pub doc: &'static str,
}

const fn required(name: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        positional: true,
        default: None,
        doc,
    }
}

const fn positional(name: &'static str, default: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        positional: true,
        default: Some(default),
        doc,
    }
}

const fn option(name: &'static str, default: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        positional: false,
        default: Some(default),
        doc,
    }
}

const STRIDE: ParamDoc = option("stride", "1", "step of the window, `2` or `2x1`");
const PAD: ParamDoc = option(
    "pad",
    "valid",
    "`valid` (none), `same` (output = ceil(input / stride)), or pixels per side: `1`, `1x2`",
);
const DILATION: ParamDoc = option(
    "dilation",
    "1",
    "spacing of the kernel's taps, `2` or `2x2`",
);
const BIAS: ParamDoc = option("bias", "true", "add a learned bias per output channel");
const POOL_STRIDE: ParamDoc = option("stride", "the kernel", "step of the window");
const POOL_PAD: ParamDoc = option(
    "pad",
    "valid",
    "`valid`, `same`, or pixels per side (at most half the kernel)",
);
const CEIL: ParamDoc = option(
    "ceil",
    "false",
    "round the output extent up, keeping a last partial window (Caffe's and PyTorch's ceil mode)",
);

/// Loss functions, as `loss KIND` names them.
pub const LOSSES: &[&str] = &[
    "softmax_cross_entropy",
    "mean_squared_error",
    "mean_absolute_error",
    "binary_cross_entropy",
];

impl LayerKind {
    pub const ALL: [LayerKind; 16] = [
        LayerKind::Input,
        LayerKind::Conv,
        LayerKind::Depthwise,
        LayerKind::Dense,
        LayerKind::Flatten,
        LayerKind::MaxPool,
        LayerKind::AvgPool,
        LayerKind::BatchNorm,
        LayerKind::Dropout,
        LayerKind::Lrn,
        LayerKind::Relu,
        LayerKind::LeakyRelu,
        LayerKind::Sigmoid,
        LayerKind::Tanh,
        LayerKind::Softmax,
        LayerKind::Loss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Input => "input",
            LayerKind::Conv => "conv",
            LayerKind::Depthwise => "depthwise",
            LayerKind::Dense => "dense",
            LayerKind::Flatten => "flatten",
            LayerKind::MaxPool => "maxpool",
            LayerKind::AvgPool => "avgpool",
            LayerKind::BatchNorm => "batchnorm",
            LayerKind::Dropout => "dropout",
            LayerKind::Lrn => "lrn",
            LayerKind::Relu => "relu",
            LayerKind::LeakyRelu => "leaky_relu",
            LayerKind::Sigmoid => "sigmoid",
            LayerKind::Tanh => "tanh",
            LayerKind::Softmax => "softmax",
            LayerKind::Loss => "loss",
        }
    }

    pub fn from_name(name: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn doc(self) -> LayerDoc {
        let (params, doc): (&'static [ParamDoc], &'static str) = match self {
            LayerKind::Input => (
                const { &[required("shape", "`CxHxW` for images, `N` for vectors")] },
                "The shape of one example; the first statement of a network.",
            ),
            LayerKind::Conv => (
                const {
                    &[
                        required("kernel", "`3x3`, or `3` for a square kernel"),
                        required("channels", "output channels"),
                        STRIDE,
                        PAD,
                        DILATION,
                        option(
                            "groups",
                            "1",
                            "split channels into this many independent groups",
                        ),
                        BIAS,
                    ]
                },
                "2-D convolution (cross-correlation, as in every framework).",
            ),
            LayerKind::Depthwise => (
                const {
                    &[
                        required("kernel", "`3x3`, or `3` for a square kernel"),
                        option("multiplier", "1", "output channels per input channel"),
                        STRIDE,
                        PAD,
                        DILATION,
                        BIAS,
                    ]
                },
                "Depthwise convolution: one filter per input channel (a convolution with \
                 `groups` equal to the input channels).",
            ),
            LayerKind::Dense => (
                const { &[required("units", "output features"), BIAS] },
                "Fully connected layer; an image input is flattened first.",
            ),
            LayerKind::Flatten => (
                &[],
                "Image to vector, channel-major (as PyTorch's flatten).",
            ),
            LayerKind::MaxPool => (
                const {
                    &[
                        required("kernel", "`3x3`, `3`, or `global` for the whole image"),
                        POOL_STRIDE,
                        POOL_PAD,
                        CEIL,
                    ]
                },
                "Max pooling; padding never wins the max.",
            ),
            LayerKind::AvgPool => (
                const {
                    &[
                        required("kernel", "`2x2`, `2`, or `global` for the whole image"),
                        POOL_STRIDE,
                        POOL_PAD,
                        CEIL,
                        option(
                            "include_pad",
                            "true",
                            "count padded zeros in the average (PyTorch's count_include_pad)",
                        ),
                    ]
                },
                "Average pooling; `avgpool global` is global average pooling.",
            ),
            LayerKind::BatchNorm => (
                const {
                    &[
                    option("eps", "1e-5", "added to the variance"),
                    option(
                        "momentum",
                        "0.1",
                        "weight of the new batch in the running statistics (PyTorch's convention)",
                    ),
                ]
                },
                "Batch normalization over the batch (and the image), per channel, with a \
                 learned scale and shift.",
            ),
            LayerKind::Dropout => (
                const {
                    &[positional(
                        "rate",
                        "0.5",
                        "probability of zeroing an element, in [0, 1)",
                    )]
                },
                "Inverted dropout while training; the identity in inference.",
            ),
            LayerKind::Lrn => (
                const {
                    &[
                        positional("size", "5", "channels in the window (odd)"),
                        option("alpha", "1e-4", "scale"),
                        option("beta", "0.75", "exponent"),
                        option("k", "1", "additive constant"),
                    ]
                },
                "Local response normalization across channels (AlexNet; PyTorch's formula).",
            ),
            LayerKind::Relu => (&[], "max(x, 0)."),
            LayerKind::LeakyRelu => (
                const { &[positional("slope", "0.01", "slope for negative inputs")] },
                "x for x > 0, slope * x otherwise.",
            ),
            LayerKind::Sigmoid => (&[], "1 / (1 + exp(-x))."),
            LayerKind::Tanh => (&[], "Hyperbolic tangent."),
            LayerKind::Softmax => (&[], "Softmax over the channels (the features of a vector)."),
            LayerKind::Loss => (
                const {
                    &[required(
                        "kind",
                        "`softmax_cross_entropy` (takes logits), `mean_squared_error`, \
                     `mean_absolute_error`, `binary_cross_entropy` (takes probabilities)",
                    )]
                },
                "The training objective; the last statement of a network.",
            ),
        };
        LayerDoc { params, doc }
    }

    pub fn signature(self) -> Signature<'static> {
        Signature {
            callee: format!("layer `{}`", self.name()),
            params: self
                .doc()
                .params
                .iter()
                .map(|p| SignatureParam {
                    name: p.name,
                    positional: p.positional,
                    required: p.default.is_none(),
                })
                .collect(),
        }
    }

    pub fn param_names(self) -> Vec<&'static str> {
        self.doc().params.iter().map(|p| p.name).collect()
    }

    pub fn positional_names(self) -> Vec<&'static str> {
        self.doc()
            .params
            .iter()
            .filter(|p| p.positional)
            .map(|p| p.name)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolOp {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f64 },
    Sigmoid,
    Tanh,
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    SoftmaxCrossEntropy,
    MeanSquaredError,
    MeanAbsoluteError,
    BinaryCrossEntropy,
}

/// A layer with every argument resolved against its input: padding in pixels
/// `[top, bottom, left, right]`, groups as a count, windows as extents.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Input {
        shape: Shape,
    },
    Conv {
        kernel: [u64; 2],
        channels: u64,
        stride: [u64; 2],
        pad: [u64; 4],
        dilation: [u64; 2],
        groups: u64,
        bias: bool,
    },
    Dense {
        units: u64,
        bias: bool,
    },
    Flatten,
    Pool {
        op: PoolOp,
        kernel: [u64; 2],
        stride: [u64; 2],
        pad: [u64; 4],
        ceil: bool,
        include_pad: bool,
    },
    BatchNorm {
        eps: f64,
        momentum: f64,
    },
    Dropout {
        rate: f64,
    },
    Lrn {
        size: u64,
        alpha: f64,
        beta: f64,
        k: f64,
    },
    Activation(Activation),
    Loss(Loss),
}

/// What a layer holds and costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Trainable parameters.
    pub params: u64,
    /// Of which weights (not biases, not batch-norm scale and shift).
    pub weights: u64,
    /// Multiply-accumulates per example.
    pub macs: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost {
            params: self.params.saturating_add(other.params),
            weights: self.weights.saturating_add(other.weights),
            macs: self.macs.saturating_add(other.macs),
        }
    }
}

/// A layer resolved against its input.
pub struct Built {
    pub layer: Layer,
    pub output: Shape,
    pub cost: Cost,
}

/// Applies a layer's rule to its input shape. `input` is `None` only for `input` itself.
pub fn build(
    kind: LayerKind,
    args: &BoundArgs,
    input: Option<&Shape>,
) -> Result<Built, Diagnostic> {
    let Some(input) = input else {
        let shape = match args.get("shape") {
            Some((Value::Dims(d), span)) => {
                if d.iter().any(|&e| e < 1) {
                    return Err(Diagnostic::error(
                        format!(
                            "every extent of the input must be at least 1, found {}",
                            Value::Dims(d.clone())
                        ),
                        span,
                        "empty extent",
                    ));
                }
                Shape(d.iter().map(|&e| e as u64).collect())
            }
            Some((value, span)) => Shape(vec![args.int_value("shape", value, span, 1)?]),
            None => unreachable!("`shape` is a required argument"),
        };
        if shape.0.len() == 2 || shape.0.len() > 3 {
            let span = args.get("shape").map_or(args.span, |(_, s)| s);
            return Err(Diagnostic::error(
                format!("an input is `CxHxW` or `N`, found {shape}"),
                span,
                format!("{} extents", shape.0.len()),
            )
            .with_help("give grayscale images one channel: `1x28x28`"));
        }
        check_size(&shape, args)?;
        return Ok(Built {
            layer: Layer::Input {
                shape: shape.clone(),
            },
            output: shape,
            cost: Cost::default(),
        });
    };
    let same = |layer: Layer| Built {
        layer,
        output: input.clone(),
        cost: Cost::default(),
    };
    let built = match kind {
        LayerKind::Input => unreachable!("placement checks allow `input` only first"),
        LayerKind::Conv => {
            let channels = args.int("channels", 1, 1)?;
            let groups = args.int("groups", 1, 1)?;
            conv(args, input, channels, groups)?
        }
        LayerKind::Depthwise => {
            let (c, _, _) = image(args, input)?;
            let multiplier = args.int("multiplier", 1, 1)?;
            let channels = c.checked_mul(multiplier).ok_or_else(|| too_large(args))?;
            conv(args, input, channels, c)?
        }
        LayerKind::Dense => {
            let units = args.int("units", 1, 1)?;
            let bias = args.bool("bias", true)?;
            let features = input.elements();
            let weights = mul(features, units, args)?;
            let output = Shape(vec![units]);
            check_size(&output, args)?;
            Built {
                layer: Layer::Dense { units, bias },
                output,
                cost: Cost {
                    params: weights + if bias { units } else { 0 },
                    weights,
                    macs: weights,
                },
            }
        }
        LayerKind::Flatten => Built {
            layer: Layer::Flatten,
            output: Shape(vec![input.elements()]),
            cost: Cost::default(),
        },
        LayerKind::MaxPool => pool(args, input, PoolOp::Max)?,
        LayerKind::AvgPool => pool(args, input, PoolOp::Avg)?,
        LayerKind::BatchNorm => {
            let eps = args.float("eps", 1e-5, (0.0, false), (f64::INFINITY, false))?;
            let momentum = args.float("momentum", 0.1, (0.0, true), (1.0, true))?;
            let channels = input.channels().ok_or_else(|| {
                Diagnostic::error(
                    format!("`batchnorm` needs an image or a vector, found {input}"),
                    args.span,
                    "no channels to normalise",
                )
            })?;
            Built {
                layer: Layer::BatchNorm { eps, momentum },
                output: input.clone(),
                cost: Cost {
                    params: 2 * channels,
                    weights: 0,
                    macs: 0,
                },
            }
        }
        LayerKind::Dropout => same(Layer::Dropout {
            rate: args.float("rate", 0.5, (0.0, true), (1.0, false))?,
        }),
        LayerKind::Lrn => {
            image(args, input)?;
            let size = args.int("size", 5, 1)?;
            if size % 2 == 0 {
                let span = args.get("size").map_or(args.span, |(_, s)| s);
                return Err(Diagnostic::error(
                    format!("`size` of {} must be odd, found {size}", args.callee),
                    span,
                    "even window",
                )
                .with_help("the window is centred on each channel, so it needs a middle"));
            }
            same(Layer::Lrn {
                size,
                alpha: args.float("alpha", 1e-4, (0.0, true), (f64::INFINITY, false))?,
                beta: args.float("beta", 0.75, (0.0, true), (f64::INFINITY, false))?,
                k: args.float("k", 1.0, (0.0, false), (f64::INFINITY, false))?,
            })
        }
        LayerKind::Relu => same(Layer::Activation(Activation::Relu)),
        LayerKind::LeakyRelu => same(Layer::Activation(Activation::LeakyRelu {
            slope: args.float(
                "slope",
                0.01,
                (f64::NEG_INFINITY, false),
                (f64::INFINITY, false),
            )?,
        })),
        LayerKind::Sigmoid => same(Layer::Activation(Activation::Sigmoid)),
        LayerKind::Tanh => same(Layer::Activation(Activation::Tanh)),
        LayerKind::Softmax => same(Layer::Activation(Activation::Softmax)),
        LayerKind::Loss => {
            let loss = match args.word("kind", LOSSES)? {
                Some("softmax_cross_entropy") => Loss::SoftmaxCrossEntropy,
                Some("mean_squared_error") => Loss::MeanSquaredError,
                Some("mean_absolute_error") => Loss::MeanAbsoluteError,
                Some("binary_cross_entropy") => Loss::BinaryCrossEntropy,
                _ => unreachable!("`kind` is required and checked against LOSSES"),
            };
            if loss == Loss::SoftmaxCrossEntropy {
                let classes = match input.0.as_slice() {
                    [k] | [k, 1, 1] => *k,
                    _ => {
                        return Err(Diagnostic::error(
                            format!(
                                "softmax cross-entropy needs one score per class, found {input}"
                            ),
                            args.span,
                            "scores expected",
                        )
                        .with_help("end the network with `dense CLASSES` or `avgpool global`"))
                    }
                };
                if classes < 2 {
                    return Err(Diagnostic::error(
                        "softmax cross-entropy needs at least 2 classes, found 1",
                        args.span,
                        "one class",
                    )
                    .with_help(
                        "for a yes/no output use `sigmoid` and `loss binary_cross_entropy`",
                    ));
                }
            }
            Built {
                layer: Layer::Loss(loss),
                output: Shape(Vec::new()),
                cost: Cost::default(),
            }
        }
    };
    Ok(built)
}

fn too_large(args: &BoundArgs) -> Diagnostic {
    Diagnostic::error(
        format!("{} is too large", args.callee),
        args.span,
        format!("more than {MAX_ELEMENTS} elements"),
    )
}

fn mul(a: u64, b: u64, args: &BoundArgs) -> Result<u64, Diagnostic> {
    a.checked_mul(b)
        .filter(|&p| p <= MAX_ELEMENTS)
        .ok_or_else(|| too_large(args))
}

fn check_size(shape: &Shape, args: &BoundArgs) -> Result<(), Diagnostic> {
    shape
        .0
        .iter()
        .try_fold(1u64, |acc, &e| mul(acc, e, args))
        .map(|_| ())
}

fn image(args: &BoundArgs, input: &Shape) -> Result<(u64, u64, u64), Diagnostic> {
    input.image().ok_or_else(|| {
        Diagnostic::error(
            format!("{} needs an image (CxHxW), found {input}", args.callee),
            args.span,
            "not an image",
        )
        .with_help("a vector has no height and width; keep images before `dense` and `flatten`")
    })
}

fn padding(args: &BoundArgs) -> Result<Padding, Diagnostic> {
    Ok(match args.get("pad") {
        None => Padding::Valid,
        Some((Value::Word(_), _)) => match args.word("pad", &["valid", "same"])? {
            Some("same") => Padding::Same,
            _ => Padding::Valid,
        },
        Some(_) => Padding::Explicit(args.pair("pad", [0, 0], 0)?),
    })
}

/// Output extents and per-side padding of a 2-D window over an image.
fn windows(
    args: &BoundArgs,
    input: &Shape,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
    pad: Padding,
    ceil: bool,
) -> Result<([u64; 2], [u64; 4]), Diagnostic> {
    let (_, h, w) = image(args, input)?;
    let axes = [h, w];
    let window = |axis: usize| Window {
        input: axes[axis],
        kernel: kernel[axis],
        stride: stride[axis],
        dilation: dilation[axis],
    };
    let (top, bottom) = window(0).padding(pad, 0);
    let (left, right) = window(1).padding(pad, 1);
    let pixels = [top, bottom, left, right];
    let out = [
        window(0).output((top, bottom), ceil),
        window(1).output((left, right), ceil),
    ];
    let [Some(oh), Some(ow)] = out else {
        let covered = format!("{}x{}", window(0).span(), window(1).span());
        let padded = format!("{}x{}", h + top + bottom, w + left + right);
        return Err(Diagnostic::error(
            format!(
                "the {covered} window of {} is larger than its input {input}",
                args.callee
            ),
            args.span,
            format!("a {covered} window over {padded} (padding included)"),
        )
        .with_help(
            "the input is too small here: pad it, downsample less before, or use a smaller kernel",
        ));
    };
    Ok(([oh, ow], pixels))
}

fn conv(args: &BoundArgs, input: &Shape, channels: u64, groups: u64) -> Result<Built, Diagnostic> {
    let (c, _, _) = image(args, input)?;
    let kernel = args.pair("kernel", [1, 1], 1)?;
    let stride = args.pair("stride", [1, 1], 1)?;
    let dilation = args.pair("dilation", [1, 1], 1)?;
    let bias = args.bool("bias", true)?;
    let pad = padding(args)?;
    let undivided = match (!c.is_multiple_of(groups), !channels.is_multiple_of(groups)) {
        (true, true) => Some(format!("{c} input and {channels} output channels")),
        (true, false) => Some(format!("{c} input channels")),
        (false, true) => Some(format!("{channels} output channels")),
        (false, false) => None,
    };
    if let Some(undivided) = undivided {
        let span = args.get("groups").map_or(args.span, |(_, s)| s);
        return Err(Diagnostic::error(
            format!(
                "{groups} groups do not divide the {undivided} of {}",
                args.callee
            ),
            span,
            format!("{groups} groups"),
        )
        .with_help("groups must divide both channel counts"));
    }
    let ([oh, ow], pixels) = windows(args, input, kernel, stride, dilation, pad, false)?;
    let output = Shape(vec![channels, oh, ow]);
    check_size(&output, args)?;
    let per_output = mul(mul(c / groups, kernel[0], args)?, kernel[1], args)?;
    let weights = mul(per_output, channels, args)?;
    let macs = mul(weights, oh * ow, args)?;
    Ok(Built {
        layer: Layer::Conv {
            kernel,
            channels,
            stride,
            pad: pixels,
            dilation,
            groups,
            bias,
        },
        output,
        cost: Cost {
            params: weights + if bias { channels } else { 0 },
            weights,
            macs,
        },
    })
}

fn pool(args: &BoundArgs, input: &Shape, op: PoolOp) -> Result<Built, Diagnostic> {
    let (c, h, w) = image(args, input)?;
    let global = matches!(args.get("kernel"), Some((Value::Word(_), _)));
    let (kernel, stride, pad) = if global {
        args.word("kernel", &["global"])?;
        [
            ("stride", "a global pool has one window"),
            ("pad", "a global pool covers the image exactly"),
        ]
        .iter()
        .find_map(|(name, why)| args.get(name).map(|(_, span)| (name, span, *why)))
        .map_or(Ok(()), |(name, span, why)| {
            Err(Diagnostic::error(
                format!("{} is global, so it takes no `{name}`", args.callee),
                span,
                "not for a global pool",
            )
            .with_note(why)
            .with_help("for a window that slides, give its size, e.g. `2x2`, instead of `global`"))
        })?;
        ([h, w], [1, 1], Padding::Valid)
    } else {
        let kernel = args.pair("kernel", [1, 1], 1)?;
        (kernel, args.pair("stride", kernel, 1)?, padding(args)?)
    };
    if let Padding::Explicit(p) = pad {
        if p[0] > kernel[0] / 2 || p[1] > kernel[1] / 2 {
            let span = args.get("pad").map_or(args.span, |(_, s)| s);
            return Err(Diagnostic::error(
                format!(
                    "padding {}x{} is more than half the {}x{} window of {}",
                    p[0], p[1], kernel[0], kernel[1], args.callee
                ),
                span,
                "too much padding",
            )
            .with_help("a window could then cover only padding; PyTorch refuses this too"));
        }
    }
    let ceil = args.bool("ceil", false)?;
    let include_pad = if op == PoolOp::Avg {
        args.bool("include_pad", true)?
    } else {
        false
    };
    let ([oh, ow], pixels) = windows(args, input, kernel, stride, [1, 1], pad, ceil)?;
    Ok(Built {
        layer: Layer::Pool {
            op,
            kernel,
            stride,
            pad: pixels,
            ceil,
            include_pad,
        },
        output: Shape(vec![c, oh, ow]),
        cost: Cost::default(),
    })
}

/// Names other frameworks use for our layers, so an error can say what netc calls them.
pub const FOREIGN_NAMES: &[(&str, &str)] = &[
    ("linear", "dense"),
    ("fc", "dense"),
    ("innerproduct", "dense"),
    ("fullyconnected", "dense"),
    ("conv2d", "conv"),
    ("convolution", "conv"),
    ("depthwise_conv", "depthwise"),
    ("bn", "batchnorm"),
    ("batch_norm", "batchnorm"),
    ("batchnorm2d", "batchnorm"),
    ("batchnormalization", "batchnorm"),
    ("max_pool", "maxpool"),
    ("maxpool2d", "maxpool"),
    ("max_pool2d", "maxpool"),
    ("avg_pool", "avgpool"),
    ("avgpool2d", "avgpool"),
    ("avg_pool2d", "avgpool"),
    ("global_avgpool", "avgpool global"),
    ("globalavgpool", "avgpool global"),
    ("adaptiveavgpool2d", "avgpool global"),
    ("localresponsenorm", "lrn"),
    ("leakyrelu", "leaky_relu"),
    ("crossentropyloss", "loss softmax_cross_entropy"),
    ("softmaxwithloss", "loss softmax_cross_entropy"),
    ("mseloss", "loss mean_squared_error"),
    ("bceloss", "loss binary_cross_entropy"),
];

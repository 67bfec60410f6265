//! Lowering: an elaborated network becomes a forward graph of primitive ops for a fixed batch
//! size. Blocks, branches, residuals and repeats disappear; each op keeps its layer's dotted
//! name. Parameters are named as PyTorch's `state_dict` names them (`conv1.weight`,
//! `conv1.bias`; batch norm's `weight`, `bias`, `running_mean`, `running_var`).
//!
//! Layers that are not primitives are built from primitives here: batch norm from reductions
//! and elementwise ops (so its backward pass comes from theirs), local response normalization
//! from a channel-window sum, mean squared and absolute error from elementwise ops.

use crate::front::layers::{Activation, Layer, Loss, PoolOp};
use crate::front::{Network, Node, NodeKind};
use crate::ir::ops::{ConvAttrs, MapFn, PoolAttrs};
use crate::ir::{Graph, InputKind, OpKind, OutputRole, Shape, ValueId};

/// Training mode computes batch statistics and drops out; inference uses running statistics
/// and keeps everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Training,
    Inference,
}

pub use netc_runtime::init::{ParamRole, StateRole};

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The graph input's name.
    pub name: String,
    pub role: ParamRole,
    /// The dotted name of the layer that owns it.
    pub layer: String,
    /// Inputs feeding each output of the owning layer, for initialisation.
    pub fan_in: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// The graph input's name; the graph's `Update` output of the same name is its new value.
    pub name: String,
    pub role: StateRole,
}

/// A graph with what callers need to feed and read it. Its outputs are the loss (a scalar),
/// the prediction that enters it (scores `[N, K]`, or values shaped like the target), and in
/// training the new batch-norm running statistics.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub graph: Graph,
    pub params: Vec<Param>,
    pub states: Vec<State>,
    pub loss_kind: Loss,
}

/// Lowers a network for batches of `batch` examples.
pub fn lower(network: &Network, batch: usize, mode: Mode) -> Result<Lowered, String> {
    if batch == 0 {
        return Err("the batch size must be at least 1".into());
    }
    let mut lowering = Lowering {
        graph: Graph::new(format!(
            "{}.{}",
            network.name,
            match mode {
                Mode::Training => "forward",
                Mode::Inference => "inference",
            }
        )),
        batch,
        mode,
        params: Vec::new(),
        states: Vec::new(),
        dropout_streams: 0,
        step: None,
    };
    let (input_node, rest) = network
        .nodes
        .split_first()
        .expect("networks open with input");
    let (loss_node, body) = rest.split_last().expect("networks close with a loss");
    let mut x_shape = vec![batch];
    x_shape.extend(input_node.output.0.iter().map(|&e| e as usize));
    let x = lowering.graph.input(InputKind::Data, "x", x_shape);
    let prediction = lowering.sequence(body, x)?;
    let NodeKind::Layer(Layer::Loss(loss_kind)) = loss_node.kind else {
        unreachable!("the front end checks that networks close with a loss")
    };
    let (loss, prediction) = lowering.loss(loss_kind, prediction, &loss_node.name);
    let mut graph = lowering.graph;
    graph.output(OutputRole::Loss, "loss", loss);
    graph.output(OutputRole::Prediction, "prediction", prediction);
    Ok(Lowered {
        graph,
        params: lowering.params,
        states: lowering.states,
        loss_kind,
    })
}

struct Lowering {
    graph: Graph,
    batch: usize,
    mode: Mode,
    params: Vec<Param>,
    states: Vec<State>,
    dropout_streams: u64,
    /// The `step` scalar, created when the first dropout layer needs it.
    step: Option<ValueId>,
}

fn to_usize<const N: usize>(values: [u64; N]) -> [usize; N] {
    values.map(|v| v as usize)
}

impl Lowering {
    fn op(&mut self, kind: OpKind, inputs: &[ValueId], layer: &str) -> ValueId {
        self.graph.op(kind, inputs, Some(layer))
    }

    fn map(&mut self, f: MapFn, x: ValueId, layer: &str) -> ValueId {
        self.op(OpKind::Map(f), &[x], layer)
    }

    fn param(
        &mut self,
        layer: &str,
        suffix: &str,
        shape: Shape,
        role: ParamRole,
        fan_in: usize,
    ) -> ValueId {
        let name = format!("{layer}.{suffix}");
        let value = self.graph.input(InputKind::Param, name.clone(), shape);
        self.params.push(Param {
            name,
            role,
            layer: layer.to_string(),
            fan_in,
        });
        value
    }

    fn state(&mut self, layer: &str, suffix: &str, shape: Shape, role: StateRole) -> ValueId {
        let name = format!("{layer}.{suffix}");
        let value = self.graph.input(InputKind::State, name.clone(), shape);
        self.states.push(State { name, role });
        value
    }

    fn sequence(&mut self, nodes: &[Node], mut x: ValueId) -> Result<ValueId, String> {
        for node in nodes {
            x = self.node(node, x)?;
        }
        Ok(x)
    }

    fn node(&mut self, node: &Node, x: ValueId) -> Result<ValueId, String> {
        Ok(match &node.kind {
            NodeKind::Layer(layer) => self.layer(layer, &node.name, x)?,
            NodeKind::Block(body) => self.sequence(body, x)?,
            NodeKind::Repeat(rounds) => {
                let mut y = x;
                for round in rounds {
                    y = self.sequence(round, y)?;
                }
                y
            }
            NodeKind::Concat(branches) => {
                let outputs = branches
                    .iter()
                    .map(|b| self.sequence(b, x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.op(OpKind::Concat { axis: 1 }, &outputs, &node.name)
            }
            NodeKind::Add(branches) => {
                let outputs = branches
                    .iter()
                    .map(|b| self.sequence(b, x))
                    .collect::<Result<Vec<_>, _>>()?;
                let (first, rest) = outputs.split_first().expect("add has branches");
                rest.iter().fold(*first, |sum, &y| {
                    self.op(OpKind::Add, &[sum, y], &node.name)
                })
            }
            NodeKind::Residual { body, shortcut } => {
                let y = self.sequence(body, x)?;
                let s = match shortcut {
                    Some(s) => self.sequence(s, x)?,
                    None => x,
                };
                self.op(OpKind::Add, &[y, s], &node.name)
            }
            NodeKind::Scale(body) => {
                let factors = self.sequence(body, x)?;
                let channels = self.graph.shape(x)[1];
                let mut shape = vec![self.batch, channels];
                shape.resize(self.graph.shape(x).len(), 1);
                let factors = if self.graph.shape(factors) == &shape {
                    factors
                } else {
                    self.op(OpKind::Reshape(shape), &[factors], &node.name)
                };
                self.op(OpKind::Mul, &[x, factors], &node.name)
            }
        })
    }

    fn layer(&mut self, layer: &Layer, name: &str, x: ValueId) -> Result<ValueId, String> {
        let shape = self.graph.shape(x).clone();
        Ok(match layer {
            Layer::Input { .. } | Layer::Loss(_) => {
                unreachable!("input and loss only open and close the network")
            }
            Layer::Conv {
                kernel,
                channels,
                stride,
                pad,
                dilation,
                groups,
                bias,
            } => {
                let (c, o, g) = (shape[1], *channels as usize, *groups as usize);
                let [kh, kw] = to_usize(*kernel);
                let fan_in = c / g * kh * kw;
                let w = self.param(
                    name,
                    "weight",
                    vec![o, c / g, kh, kw],
                    ParamRole::Weight,
                    fan_in,
                );
                let attrs = ConvAttrs {
                    stride: to_usize(*stride),
                    pad: to_usize(*pad),
                    dilation: to_usize(*dilation),
                    groups: g,
                };
                let y = self.op(OpKind::Conv2d(attrs), &[x, w], name);
                if *bias {
                    let b = self.param(name, "bias", vec![o], ParamRole::Bias, fan_in);
                    let b = self.op(OpKind::Reshape(vec![1, o, 1, 1]), &[b], name);
                    self.op(OpKind::Add, &[y, b], name)
                } else {
                    y
                }
            }
            Layer::Dense { units, bias } => {
                let features: usize = shape[1..].iter().product();
                let x = self.flatten(x, name);
                let u = *units as usize;
                let w = self.param(
                    name,
                    "weight",
                    vec![u, features],
                    ParamRole::Weight,
                    features,
                );
                let y = self.op(
                    OpKind::MatMul {
                        transpose_a: false,
                        transpose_b: true,
                    },
                    &[x, w],
                    name,
                );
                if *bias {
                    let b = self.param(name, "bias", vec![u], ParamRole::Bias, features);
                    self.op(OpKind::Add, &[y, b], name)
                } else {
                    y
                }
            }
            Layer::Flatten => self.flatten(x, name),
            Layer::Pool {
                op,
                kernel,
                stride,
                pad,
                ceil,
                include_pad,
            } => {
                let attrs = PoolAttrs {
                    kernel: to_usize(*kernel),
                    stride: to_usize(*stride),
                    pad: to_usize(*pad),
                    ceil: *ceil,
                    include_pad: *include_pad,
                };
                let kind = match op {
                    PoolOp::Max => OpKind::MaxPool(attrs),
                    PoolOp::Avg => OpKind::AvgPool(attrs),
                };
                self.op(kind, &[x], name)
            }
            Layer::BatchNorm { eps, momentum } => self.batch_norm(x, name, *eps, *momentum)?,
            Layer::Dropout { rate } => match self.mode {
                Mode::Training if *rate > 0.0 => {
                    let step = match self.step {
                        Some(step) => step,
                        None => {
                            let step = self.graph.input(InputKind::Scalar, "step", vec![]);
                            self.step = Some(step);
                            step
                        }
                    };
                    let stream = self.dropout_streams;
                    self.dropout_streams += 1;
                    let mask = self.op(
                        OpKind::DropoutMask {
                            rate: *rate,
                            stream,
                            shape,
                        },
                        &[step],
                        name,
                    );
                    self.op(OpKind::Mul, &[x, mask], name)
                }
                _ => x,
            },
            Layer::Lrn {
                size,
                alpha,
                beta,
                k,
            } => {
                // PyTorch: x / (k + alpha / size * sum of x² over the channel window) ^ beta.
                let squares = self.op(OpKind::Mul, &[x, x], name);
                let sums = self.op(
                    OpKind::ChannelWindowSum {
                        size: *size as usize,
                    },
                    &[squares],
                    name,
                );
                let scaled = self.map(MapFn::Scale(alpha / *size as f64), sums, name);
                let shifted = self.map(MapFn::AddConst(*k), scaled, name);
                let divisor = self.map(MapFn::PowConst(*beta), shifted, name);
                self.op(OpKind::Div, &[x, divisor], name)
            }
            Layer::Activation(activation) => match activation {
                Activation::Relu => self.map(MapFn::Relu, x, name),
                Activation::LeakyRelu { slope } => self.map(MapFn::LeakyRelu(*slope), x, name),
                Activation::Sigmoid => self.map(MapFn::Sigmoid, x, name),
                Activation::Tanh => self.map(MapFn::Tanh, x, name),
                Activation::Softmax => self.op(OpKind::Softmax, &[x], name),
            },
        })
    }

    fn flatten(&mut self, x: ValueId, name: &str) -> ValueId {
        let shape = self.graph.shape(x);
        if shape.len() == 2 {
            return x;
        }
        let features = shape[1..].iter().product();
        self.op(OpKind::Reshape(vec![self.batch, features]), &[x], name)
    }

    /// Batch norm over every axis but the channels (axis 1), as PyTorch's BatchNorm1d/2d.
    fn batch_norm(
        &mut self,
        x: ValueId,
        name: &str,
        eps: f64,
        momentum: f64,
    ) -> Result<ValueId, String> {
        let shape = self.graph.shape(x).clone();
        let c = shape[1];
        let mut stat_shape = vec![1; shape.len()];
        stat_shape[1] = c;
        let gamma = self.param(name, "weight", vec![c], ParamRole::NormScale, 1);
        let beta = self.param(name, "bias", vec![c], ParamRole::NormShift, 1);
        let running_mean = self.state(name, "running_mean", vec![c], StateRole::RunningMean);
        let running_var = self.state(name, "running_var", vec![c], StateRole::RunningVar);
        let gamma = self.op(OpKind::Reshape(stat_shape.clone()), &[gamma], name);
        let beta = self.op(OpKind::Reshape(stat_shape.clone()), &[beta], name);
        let (centred, inv_std) = match self.mode {
            Mode::Training => {
                let count = shape.iter().product::<usize>() / c;
                if count < 2 {
                    return Err(format!(
                        "batch norm `{name}` needs more than one value per channel to train; \
                         a batch of {} gives one: use a larger batch",
                        self.batch
                    ));
                }
                let inv_count = 1.0 / count as f64;
                let sum = self.op(OpKind::SumTo(stat_shape.clone()), &[x], name);
                let mean = self.map(MapFn::Scale(inv_count), sum, name);
                let centred = self.op(OpKind::Sub, &[x, mean], name);
                let squares = OpKind::SumSquaredDeviationsTo(stat_shape.clone());
                let squares = self.op(squares, &[x], name);
                let var = self.map(MapFn::Scale(inv_count), squares, name);
                let shifted = self.map(MapFn::AddConst(eps), var, name);
                let inv_std = self.map(MapFn::PowConst(-0.5), shifted, name);
                // Running statistics: PyTorch's momentum, and the unbiased variance.
                let unbias = count as f64 / (count - 1) as f64;
                let stats = [
                    (running_mean, format!("{name}.running_mean"), mean, 1.0),
                    (running_var, format!("{name}.running_var"), var, unbias),
                ];
                for (state, state_name, batch_stat, factor) in stats {
                    let old = self.map(MapFn::Scale(1.0 - momentum), state, name);
                    let stat = self.op(OpKind::Reshape(vec![c]), &[batch_stat], name);
                    let new = self.map(MapFn::Scale(momentum * factor), stat, name);
                    let updated = self.op(OpKind::Add, &[old, new], name);
                    self.graph.output(OutputRole::Update, state_name, updated);
                }
                (centred, inv_std)
            }
            Mode::Inference => {
                let mean = self.op(OpKind::Reshape(stat_shape.clone()), &[running_mean], name);
                let var = self.op(OpKind::Reshape(stat_shape.clone()), &[running_var], name);
                let centred = self.op(OpKind::Sub, &[x, mean], name);
                let shifted = self.map(MapFn::AddConst(eps), var, name);
                (centred, self.map(MapFn::PowConst(-0.5), shifted, name))
            }
        };
        let normalised = self.op(OpKind::Mul, &[centred, inv_std], name);
        let scaled = self.op(OpKind::Mul, &[normalised, gamma], name);
        Ok(self.op(OpKind::Add, &[scaled, beta], name))
    }

    /// The loss and the prediction it compares, with the target input.
    fn loss(&mut self, kind: Loss, prediction: ValueId, name: &str) -> (ValueId, ValueId) {
        let shape = self.graph.shape(prediction).clone();
        match kind {
            Loss::SoftmaxCrossEntropy => {
                let scores = self.flatten(prediction, name);
                let labels = self
                    .graph
                    .input(InputKind::Target, "labels", vec![self.batch]);
                (
                    self.op(OpKind::SoftmaxCrossEntropy, &[scores, labels], name),
                    scores,
                )
            }
            Loss::BinaryCrossEntropy => {
                let target = self.graph.input(InputKind::Target, "target", shape);
                (
                    self.op(OpKind::BinaryCrossEntropy, &[prediction, target], name),
                    prediction,
                )
            }
            Loss::MeanSquaredError | Loss::MeanAbsoluteError => {
                let target = self.graph.input(InputKind::Target, "target", shape.clone());
                let error = self.op(OpKind::Sub, &[prediction, target], name);
                let per_element = if kind == Loss::MeanSquaredError {
                    self.op(OpKind::Mul, &[error, error], name)
                } else {
                    self.map(MapFn::Abs, error, name)
                };
                let total = self.op(OpKind::SumTo(vec![]), &[per_element], name);
                let count = shape.iter().product::<usize>() as f64;
                (self.map(MapFn::Scale(1.0 / count), total, name), prediction)
            }
        }
    }
}

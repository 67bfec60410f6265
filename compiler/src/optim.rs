//! Optimizer updates as IR ops on state tensors, so the update is part of the training graph
//! that later passes fuse and schedule. Formulas and defaults are PyTorch's (`torch.optim`),
//! state named as PyTorch's optimizers name it (`momentum_buffer`, `exp_avg`, ...).
//!
//! The learning rate is a runtime scalar input `lr` (schedules change it between steps); Adam's
//! bias corrections use the 1-based step count, the scalar input `step`.

use crate::ir::ops::MapFn;
use crate::ir::{Graph, InputKind, OpKind, OutputRole, ValueId};
use crate::lower::{Param, ParamRole, State, StateRole};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd,
    /// PyTorch's momentum (dampening 0): `b = μb + g; w -= lr b`.
    Momentum {
        momentum: f64,
    },
    /// PyTorch's Nesterov form: `b = μb + g; w -= lr (g + μb)`.
    Nesterov {
        momentum: f64,
    },
    AdaGrad {
        eps: f64,
    },
    RmsProp {
        alpha: f64,
        eps: f64,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// Adam with weight decay decoupled from the gradient (Loshchilov and Hutter).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl OptimizerKind {
    pub const NAMES: [&'static str; 7] = [
        "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw",
    ];

    /// The optimizer of this name with PyTorch's defaults (momentum 0.9, as practice uses).
    pub fn from_name(name: &str) -> Option<OptimizerKind> {
        Some(match name {
            "sgd" => OptimizerKind::Sgd,
            "momentum" => OptimizerKind::Momentum { momentum: 0.9 },
            "nesterov" => OptimizerKind::Nesterov { momentum: 0.9 },
            "adagrad" => OptimizerKind::AdaGrad { eps: 1e-10 },
            "rmsprop" => OptimizerKind::RmsProp {
                alpha: 0.99,
                eps: 1e-8,
            },
            "adam" => OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            "adamw" => OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// L2 penalty added to the gradient (`weight_decay` of torch.optim); for AdamW, the
    /// decoupled decay rate.
    pub weight_decay: f64,
    /// L1 penalty: `l1 * sign(w)` added to the gradient.
    pub l1: f64,
    /// Decay biases and batch-norm parameters too; by default only weights are decayed.
    pub decay_all: bool,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind) -> Optimizer {
        Optimizer {
            kind,
            weight_decay: 0.0,
            l1: 0.0,
            decay_all: false,
        }
    }
}

/// Appends the update of each parameter, given its gradient, as `Update` outputs for the
/// parameters and the optimizer state (whose inputs it adds to `states`).
pub fn apply(
    graph: &mut Graph,
    optimizer: &Optimizer,
    params: &[(&Param, ValueId)],
    states: &mut Vec<State>,
) {
    let lr = graph.input(InputKind::Scalar, "lr", vec![]);
    let step = graph
        .find_input("step")
        .unwrap_or_else(|| graph.input(InputKind::Scalar, "step", vec![]));
    // Adam's bias corrections are the same scalars for every parameter: computed once, before
    // any update, so that the updates depend on nothing computed among them.
    let corrections = match optimizer.kind {
        OptimizerKind::Adam { beta1, beta2, .. } | OptimizerKind::AdamW { beta1, beta2, .. } => {
            Some([beta1, beta2].map(|beta| bias_correction(graph, beta, step)))
        }
        _ => None,
    };
    for &(param, grad) in params {
        let mut update = Update {
            graph: &mut *graph,
            layer: param.layer.clone(),
            states: &mut *states,
            param: &param.name,
        };
        let w = update
            .graph
            .find_input(&param.name)
            .expect("parameters are graph inputs");
        let decayed = optimizer.decay_all || param.role == ParamRole::Weight;
        let mut g = grad;
        if decayed && optimizer.l1 != 0.0 {
            let sign = update.map(MapFn::Sign, w);
            let penalty = update.map(MapFn::Scale(optimizer.l1), sign);
            g = update.add(g, penalty);
        }
        let coupled_decay = !matches!(optimizer.kind, OptimizerKind::AdamW { .. });
        if decayed && coupled_decay && optimizer.weight_decay != 0.0 {
            let penalty = update.map(MapFn::Scale(optimizer.weight_decay), w);
            g = update.add(g, penalty);
        }
        let direction = match optimizer.kind {
            OptimizerKind::Sgd => g,
            OptimizerKind::Momentum { momentum } | OptimizerKind::Nesterov { momentum } => {
                let buffer = update.state("momentum_buffer", w);
                let kept = update.map(MapFn::Scale(momentum), buffer);
                let new_buffer = update.add(kept, g);
                update.write("momentum_buffer", new_buffer);
                if let OptimizerKind::Nesterov { .. } = optimizer.kind {
                    let ahead = update.map(MapFn::Scale(momentum), new_buffer);
                    update.add(g, ahead)
                } else {
                    new_buffer
                }
            }
            OptimizerKind::AdaGrad { eps } => {
                let sum = update.state("sum", w);
                let squares = update.op(OpKind::Mul, &[g, g]);
                let new_sum = update.add(sum, squares);
                update.write("sum", new_sum);
                update.scaled_by_rms(g, new_sum, eps)
            }
            OptimizerKind::RmsProp { alpha, eps } => {
                let average = update.moving_average("square_avg", w, alpha, g, true);
                update.scaled_by_rms(g, average, eps)
            }
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                let [m_correction, v_correction] = corrections.expect("made for Adam");
                let m = update.moving_average("exp_avg", w, beta1, g, false);
                let v = update.moving_average("exp_avg_sq", w, beta2, g, true);
                let m_hat = update.op(OpKind::Div, &[m, m_correction]);
                let v_hat = update.op(OpKind::Div, &[v, v_correction]);
                update.scaled_by_rms(m_hat, v_hat, eps)
            }
        };
        let mut w_base = w;
        if let OptimizerKind::AdamW { .. } = optimizer.kind {
            if decayed && optimizer.weight_decay != 0.0 {
                // w (1 - lr wd), with lr a runtime scalar.
                let lr_decay = update.map(MapFn::Scale(optimizer.weight_decay), lr);
                let shrink = update.op(OpKind::Mul, &[w, lr_decay]);
                w_base = update.op(OpKind::Sub, &[w, shrink]);
            }
        }
        let stride = update.op(OpKind::Mul, &[direction, lr]);
        let new_w = update.op(OpKind::Sub, &[w_base, stride]);
        update
            .graph
            .output(OutputRole::Update, param.name.clone(), new_w);
    }
}

/// Builds one parameter's update.
struct Update<'a> {
    graph: &'a mut Graph,
    layer: String,
    states: &'a mut Vec<State>,
    param: &'a str,
}

impl Update<'_> {
    fn op(&mut self, kind: OpKind, inputs: &[ValueId]) -> ValueId {
        self.graph.op(kind, inputs, Some(&self.layer))
    }

    fn map(&mut self, f: MapFn, x: ValueId) -> ValueId {
        self.op(OpKind::Map(f), &[x])
    }

    fn add(&mut self, a: ValueId, b: ValueId) -> ValueId {
        self.op(OpKind::Add, &[a, b])
    }

    /// A state tensor shaped like the parameter, zero before the first step.
    fn state(&mut self, suffix: &str, like: ValueId) -> ValueId {
        let name = format!("{}.{suffix}", self.param);
        let shape = self.graph.shape(like).clone();
        self.states.push(State {
            name: name.clone(),
            role: StateRole::OptimizerMoment,
        });
        self.graph.input(InputKind::State, name, shape)
    }

    fn write(&mut self, suffix: &str, value: ValueId) {
        self.graph.output(
            OutputRole::Update,
            format!("{}.{suffix}", self.param),
            value,
        );
    }

    /// `s = decay s + (1 - decay) x` (of `x²` when `square`), written back as state.
    fn moving_average(
        &mut self,
        suffix: &str,
        like: ValueId,
        decay: f64,
        x: ValueId,
        square: bool,
    ) -> ValueId {
        let state = self.state(suffix, like);
        let x = if square {
            self.op(OpKind::Mul, &[x, x])
        } else {
            x
        };
        let kept = self.map(MapFn::Scale(decay), state);
        let fresh = self.map(MapFn::Scale(1.0 - decay), x);
        let average = self.add(kept, fresh);
        self.write(suffix, average);
        average
    }

    /// `x / (sqrt(s) + eps)`.
    fn scaled_by_rms(&mut self, x: ValueId, s: ValueId, eps: f64) -> ValueId {
        let root = self.map(MapFn::Sqrt, s);
        let denominator = self.map(MapFn::AddConst(eps), root);
        self.op(OpKind::Div, &[x, denominator])
    }
}

/// Adam's bias correction `1 - beta^step`, which the moment of that decay is divided by.
fn bias_correction(graph: &mut Graph, beta: f64, step: ValueId) -> ValueId {
    let exponent = graph.op(OpKind::Map(MapFn::Scale(beta.ln())), &[step], None);
    let power = graph.op(OpKind::Map(MapFn::Exp), &[exponent], None);
    let negated = graph.op(OpKind::Map(MapFn::Scale(-1.0)), &[power], None);
    graph.op(OpKind::Map(MapFn::AddConst(1.0)), &[negated], None)
}

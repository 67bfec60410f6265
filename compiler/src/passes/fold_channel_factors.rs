//! `fold_channel_factors`: in a fused chain's elementwise steps (a chain of its own, or a
//! convolution's prologue), the factors and terms that are constant per channel (`[1, C, 1, 1]`:
//! batch norm's mean, 1/σ, γ and β) are gathered, so that each element pays one multiply per
//! tensor it reads and one add per term. Batch norm's apply `(x − mean) · (1/σ) · γ + β` becomes
//! `x · a + b`, with `a = (1/σ) · γ` and `b = β − mean · a` per channel (the form PyTorch's CPU
//! kernel computes), and its gradient's `2 (x − mean) k + dy · (γ/σ) + c` becomes
//! `x · a + dy · b + c'`. The per-channel steps cost nothing per element where a kernel computes
//! them once per channel (a prologue) or hoists them out of its loops. The chain means the same;
//! its rounding differs (within the tolerance the tests hold generated code to). A chain is
//! rewritten only where that leaves fewer steps over whole tensors.

use super::{rewrite, Rewrite};
use crate::ir::ops::fused::{Arg, Chain, Step};
use crate::ir::ops::MapFn;
use crate::ir::{Graph, OpKind, Shape, ValueId};

pub fn run(graph: &Graph) -> Graph {
    rewrite(graph, |new, index, renumber| {
        let op = &graph.ops[index];
        let OpKind::Fused(chain) = &op.kind else {
            return Rewrite::Keep;
        };
        let shapes: Vec<&Shape> = op.inputs.iter().map(|&v| graph.shape(v)).collect();
        let Some(folded) = fold(chain, &shapes) else {
            return Rewrite::Keep;
        };
        let folded = OpKind::Fused(folded);
        if folded.shape(&shapes).as_ref() != Ok(graph.shape(op.output)) {
            return Rewrite::Keep;
        }
        let inputs: Vec<ValueId> = op.inputs.iter().map(|v| renumber[v]).collect();
        Rewrite::Replace(new.op(folded, &inputs, op.layer.as_deref()))
    })
}

/// A value of the steps being folded.
#[derive(Clone)]
enum Sym {
    /// Constant per channel: an input, or a step of the new chain.
    Channel(Arg),
    /// `Σ base · coef · factor + constant + offset` over whole tensors `base`, `coef` and
    /// `constant` per channel (none: 1 and 0).
    Affine {
        terms: Vec<Term>,
        constant: Option<Arg>,
        offset: f64,
    },
}

#[derive(Clone)]
struct Term {
    base: Arg,
    coef: Option<Arg>,
    factor: f64,
}

impl Sym {
    fn whole(base: Arg) -> Sym {
        Sym::Affine {
            terms: vec![Term {
                base,
                coef: None,
                factor: 1.0,
            }],
            constant: None,
            offset: 0.0,
        }
    }
}

/// The new chain's steps, and which of them are over whole tensors.
#[derive(Default)]
struct Folder {
    steps: Vec<Step>,
    whole: Vec<bool>,
    /// Which inputs are whole tensors.
    whole_inputs: Vec<bool>,
}

impl Folder {
    fn is_whole(&self, arg: Arg) -> bool {
        match arg {
            Arg::Input(i) => self.whole_inputs[i],
            Arg::Step(s) => self.whole[s],
        }
    }

    fn push(&mut self, kind: OpKind, args: &[Arg]) -> Arg {
        let whole = args.iter().any(|&a| self.is_whole(a));
        self.steps.push(Step {
            kind,
            args: args.to_vec(),
        });
        self.whole.push(whole);
        Arg::Step(self.steps.len() - 1)
    }

    fn map(&mut self, f: MapFn, arg: Arg) -> Arg {
        self.push(OpKind::Map(f), &[arg])
    }

    /// `a + b` per channel, either absent (0).
    fn add(&mut self, a: Option<Arg>, b: Option<Arg>) -> Option<Arg> {
        match (a, b) {
            (Some(a), Some(b)) => Some(self.push(OpKind::Add, &[a, b])),
            (a, b) => a.or(b),
        }
    }

    /// `a · b` per channel, `a` absent (1).
    fn times(&mut self, a: Option<Arg>, b: Arg) -> Arg {
        match a {
            Some(a) => self.push(OpKind::Mul, &[a, b]),
            None => b,
        }
    }

    /// The sum of `terms`, `constant` and `offset` as steps over whole tensors.
    fn materialize(&mut self, sym: &Sym) -> Arg {
        let (terms, constant, offset) = match sym {
            Sym::Channel(arg) => return *arg,
            Sym::Affine {
                terms,
                constant,
                offset,
            } => (terms, *constant, *offset),
        };
        let mut sum: Option<Arg> = None;
        for term in terms {
            let (value, subtract) = match term.coef {
                Some(coef) => {
                    let coef = match term.factor == 1.0 {
                        true => coef,
                        false => self.map(MapFn::Scale(term.factor), coef),
                    };
                    (self.push(OpKind::Mul, &[term.base, coef]), false)
                }
                None if term.factor == 1.0 => (term.base, false),
                None if term.factor == -1.0 && sum.is_some() => (term.base, true),
                None => (self.map(MapFn::Scale(term.factor), term.base), false),
            };
            sum = Some(match sum {
                None => value,
                Some(sum) if subtract => self.push(OpKind::Sub, &[sum, value]),
                Some(sum) => self.push(OpKind::Add, &[sum, value]),
            });
        }
        let mut sum = sum.expect("an affine value has a term");
        let constant = match constant {
            Some(c) if offset != 0.0 => Some(self.map(MapFn::AddConst(offset), c)),
            constant => constant,
        };
        if let Some(constant) = constant {
            sum = self.push(OpKind::Add, &[sum, constant]);
        } else if offset != 0.0 {
            sum = self.map(MapFn::AddConst(offset), sum);
        }
        sum
    }

    /// `sym · c` for `c` per channel.
    fn scale_by(&mut self, sym: Sym, c: Arg) -> Sym {
        match sym {
            Sym::Channel(a) => Sym::Channel(self.push(OpKind::Mul, &[a, c])),
            Sym::Affine {
                terms,
                constant,
                offset,
            } => {
                let terms = terms
                    .into_iter()
                    .map(|t| Term {
                        coef: Some(self.times(t.coef, c)),
                        ..t
                    })
                    .collect();
                let shifted = (offset != 0.0).then(|| self.map(MapFn::Scale(offset), c));
                let constant = constant.map(|k| self.push(OpKind::Mul, &[k, c]));
                let constant = self.add(constant, shifted);
                Sym::Affine {
                    terms,
                    constant,
                    offset: 0.0,
                }
            }
        }
    }

    /// `sym · k`.
    fn scaled(&mut self, sym: Sym, k: f64) -> Sym {
        match sym {
            Sym::Channel(a) => Sym::Channel(self.map(MapFn::Scale(k), a)),
            Sym::Affine {
                terms,
                constant,
                offset,
            } => Sym::Affine {
                terms: terms
                    .into_iter()
                    .map(|t| Term {
                        factor: t.factor * k,
                        ..t
                    })
                    .collect(),
                constant: constant.map(|c| self.map(MapFn::Scale(k), c)),
                offset: offset * k,
            },
        }
    }

    /// `a + b`.
    fn sum(&mut self, a: Sym, b: Sym) -> Sym {
        match (a, b) {
            (Sym::Channel(a), Sym::Channel(b)) => Sym::Channel(self.push(OpKind::Add, &[a, b])),
            (
                Sym::Channel(c),
                Sym::Affine {
                    terms,
                    constant,
                    offset,
                },
            )
            | (
                Sym::Affine {
                    terms,
                    constant,
                    offset,
                },
                Sym::Channel(c),
            ) => Sym::Affine {
                terms,
                constant: self.add(constant, Some(c)),
                offset,
            },
            (
                Sym::Affine {
                    terms: mut a,
                    constant: ca,
                    offset: oa,
                },
                Sym::Affine {
                    terms: b,
                    constant: cb,
                    offset: ob,
                },
            ) => {
                a.extend(b);
                Sym::Affine {
                    terms: a,
                    constant: self.add(ca, cb),
                    offset: oa + ob,
                }
            }
        }
    }

    /// The value of a step of `kind` over `args`.
    fn apply(&mut self, kind: &OpKind, mut args: Vec<Sym>) -> Sym {
        let channel = |s: &Sym| matches!(s, Sym::Channel(_));
        if args.iter().all(channel) {
            let args: Vec<Arg> = args.iter().map(|s| self.materialize(s)).collect();
            return Sym::Channel(self.push(kind.clone(), &args));
        }
        match kind {
            OpKind::Add => {
                let b = args.pop().expect("two operands");
                let a = args.pop().expect("two operands");
                self.sum(a, b)
            }
            OpKind::Sub => {
                let b = args.pop().expect("two operands");
                let a = args.pop().expect("two operands");
                let b = self.scaled(b, -1.0);
                self.sum(a, b)
            }
            OpKind::Mul => {
                let b = args.pop().expect("two operands");
                let a = args.pop().expect("two operands");
                match (a, b) {
                    (Sym::Channel(c), sym) | (sym, Sym::Channel(c)) => self.scale_by(sym, c),
                    (a, b) => {
                        let (a, b) = (self.materialize(&a), self.materialize(&b));
                        Sym::whole(self.push(OpKind::Mul, &[a, b]))
                    }
                }
            }
            OpKind::Map(MapFn::Scale(k)) => {
                let a = args.pop().expect("one operand");
                self.scaled(a, *k)
            }
            OpKind::Map(MapFn::Neg) => {
                let a = args.pop().expect("one operand");
                self.scaled(a, -1.0)
            }
            OpKind::Map(MapFn::AddConst(k)) => match args.pop().expect("one operand") {
                Sym::Affine {
                    terms,
                    constant,
                    offset,
                } => Sym::Affine {
                    terms,
                    constant,
                    offset: offset + k,
                },
                Sym::Channel(_) => unreachable!("a step over channels alone is folded above"),
            },
            kind => {
                let args: Vec<Arg> = args.iter().map(|s| self.materialize(s)).collect();
                Sym::whole(self.push(kind.clone(), &args))
            }
        }
    }
}

/// `chain` with its elementwise steps (all of them, or its prologue's) folded, where that
/// leaves fewer steps over whole tensors; `None` otherwise.
fn fold(chain: &Chain, inputs: &[&Shape]) -> Option<Chain> {
    let end = if chain.is_elementwise() {
        chain.steps.len()
    } else {
        chain.contraction()?.prologue.len()
    };
    if end == 0 {
        return None;
    }
    let segment = &chain.steps[..end];
    // Per channel: the shape of the widest input the steps read, all but its channels 1.
    let read = segment
        .iter()
        .flat_map(|s| &s.args)
        .filter_map(|a| match *a {
            Arg::Input(i) => Some(inputs[i]),
            Arg::Step(_) => None,
        });
    let widest = read.max_by_key(|shape| shape.iter().product::<usize>())?;
    let per_channel = |shape: &Shape| {
        shape.len() == widest.len()
            && widest.len() >= 2
            && shape[1] == widest[1]
            && shape
                .iter()
                .enumerate()
                .all(|(axis, &n)| axis == 1 || n == 1)
    };
    let mut folder = Folder {
        whole_inputs: inputs.iter().map(|s| !per_channel(s)).collect(),
        ..Folder::default()
    };
    let mut values: Vec<Sym> = Vec::with_capacity(end);
    for step in segment {
        let args = step
            .args
            .iter()
            .map(|&arg| match arg {
                Arg::Input(i) if per_channel(inputs[i]) => Sym::Channel(arg),
                Arg::Input(_) => Sym::whole(arg),
                Arg::Step(s) => values[s].clone(),
            })
            .collect();
        let value = folder.apply(&step.kind, args);
        values.push(value);
    }
    let before = values
        .iter()
        .filter(|v| !matches!(v, Sym::Channel(_)))
        .count();
    let last = folder.materialize(values.last().expect("a step"));
    let after = folder.whole.iter().filter(|&&w| w).count();
    let new_end = folder.steps.len();
    if after >= before || last != Arg::Step(new_end - 1) {
        return None;
    }
    // The steps after the segment, and the results, moved along.
    let moved = |s: usize| match s {
        s if s >= end => Some(s + new_end - end),
        s if s == end - 1 => Some(new_end - 1),
        _ => None,
    };
    let mut steps = folder.steps;
    for step in &chain.steps[end..] {
        let args = step
            .args
            .iter()
            .map(|&arg| match arg {
                Arg::Step(s) => moved(s).map(Arg::Step),
                input => Some(input),
            })
            .collect::<Option<Vec<Arg>>>()?;
        steps.push(Step {
            kind: step.kind.clone(),
            args,
        });
    }
    let results = chain
        .results
        .iter()
        .map(|&r| moved(r))
        .collect::<Option<_>>()?;
    Some(Chain { steps, results })
}

//! Optimizers with PyTorch's update formulas (SGD with momentum, Adam,
//! AdamW), global-norm gradient clipping and learning-rate schedules.
//!
//! The formulas follow `torch.optim`'s single-tensor (CPU) implementations
//! operation by operation, in f32 with the same scalar factors, so that a
//! trajectory matches PyTorch's to rounding. State is kept per parameter
//! name (as `torch.optim` keeps it per parameter), including each
//! parameter's own step count, and can be exported and restored for
//! checkpoints ([`Optimizer::state_tensors`], [`Optimizer::load_state_tensors`]).
use std::collections::BTreeMap;

use crate::autograd::GradStore;
use crate::error::OpsError;
use crate::parameters::ParameterSet;
use crate::tensor::Tensor;

/// An optimizer's kind and hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0: plain SGD).
        momentum: f64,
        /// Dampening of the momentum's gradient term.
        dampening: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `torch.optim.Adam` (weight decay added to the gradient).
    Adam {
        /// Learning rate.
        lr: f64,
        /// Coefficients of the running averages of the gradient and its square.
        betas: (f64, f64),
        /// Added to the denominator.
        eps: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW {
        /// Learning rate.
        lr: f64,
        /// Coefficients of the running averages of the gradient and its square.
        betas: (f64, f64),
        /// Added to the denominator.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// AdamW with PyTorch's defaults (betas 0.9/0.999, eps 1e-8, weight decay 0.01).
    pub fn adamw(lr: f64) -> OptimizerConfig {
        OptimizerConfig::AdamW {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => *lr,
        }
    }

    /// The same configuration with another learning rate.
    pub fn with_lr(&self, new_lr: f64) -> OptimizerConfig {
        let mut config = self.clone();
        match &mut config {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::AdamW { lr, .. } => *lr = new_lr,
        }
        config
    }

    /// Parses `{"name": "adamw" | "adam" | "sgd", "lr": ..., ...}` (the
    /// fixtures' `optimizer` metadata; absent fields take PyTorch's
    /// defaults, unknown fields such as `steps` are ignored).
    pub fn from_json(value: &serde_json::Value) -> Result<OptimizerConfig, OpsError> {
        let bad = |key: &str, reason: String| OpsError::BadMetadata {
            what: "optimizer".to_string(),
            key: key.to_string(),
            reason,
        };
        let object = value
            .as_object()
            .ok_or_else(|| bad("", format!("expected a JSON object, got {value}")))?;
        let number = |key: &str, default: Option<f64>| -> Result<f64, OpsError> {
            match object.get(key) {
                None => default.ok_or_else(|| bad(key, "missing".to_string())),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| bad(key, format!("expected a non-negative number, got {v}"))),
            }
        };
        let betas = || -> Result<(f64, f64), OpsError> {
            match object.get("betas") {
                None => Ok((0.9, 0.999)),
                Some(v) => match v.as_array().map(|a| a.as_slice()) {
                    Some([b1, b2]) => match (b1.as_f64(), b2.as_f64()) {
                        (Some(b1), Some(b2))
                            if (0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2) =>
                        {
                            Ok((b1, b2))
                        }
                        _ => Err(bad(
                            "betas",
                            format!("expected two numbers in [0, 1), got {v}"),
                        )),
                    },
                    _ => Err(bad("betas", format!("expected [beta1, beta2], got {v}"))),
                },
            }
        };
        let name = object
            .get("name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("name", "missing or not a string".to_string()))?;
        match name {
            "sgd" => Ok(OptimizerConfig::Sgd {
                lr: number("lr", None)?,
                momentum: number("momentum", Some(0.0))?,
                dampening: number("dampening", Some(0.0))?,
                weight_decay: number("weight_decay", Some(0.0))?,
                nesterov: match object.get("nesterov") {
                    None => false,
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| bad("nesterov", format!("expected a boolean, got {v}")))?,
                },
            }),
            "adam" => Ok(OptimizerConfig::Adam {
                lr: number("lr", Some(1e-3))?,
                betas: betas()?,
                eps: number("eps", Some(1e-8))?,
                weight_decay: number("weight_decay", Some(0.0))?,
            }),
            "adamw" => Ok(OptimizerConfig::AdamW {
                lr: number("lr", Some(1e-3))?,
                betas: betas()?,
                eps: number("eps", Some(1e-8))?,
                weight_decay: number("weight_decay", Some(0.01))?,
            }),
            other => Err(bad(
                "name",
                format!("unknown optimizer `{other}` (known: sgd, adam, adamw)"),
            )),
        }
    }

    /// The configuration as JSON (the inverse of [`OptimizerConfig::from_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        match *self {
            OptimizerConfig::Sgd {
                lr,
                momentum,
                dampening,
                weight_decay,
                nesterov,
            } => serde_json::json!({
                "name": "sgd", "lr": lr, "momentum": momentum, "dampening": dampening,
                "weight_decay": weight_decay, "nesterov": nesterov,
            }),
            OptimizerConfig::Adam {
                lr,
                betas,
                eps,
                weight_decay,
            } => serde_json::json!({
                "name": "adam", "lr": lr, "betas": [betas.0, betas.1], "eps": eps,
                "weight_decay": weight_decay,
            }),
            OptimizerConfig::AdamW {
                lr,
                betas,
                eps,
                weight_decay,
            } => serde_json::json!({
                "name": "adamw", "lr": lr, "betas": [betas.0, betas.1], "eps": eps,
                "weight_decay": weight_decay,
            }),
        }
    }
}

/// The state one parameter carries between steps.
#[derive(Clone, Debug, Default)]
struct ParameterState {
    /// Steps taken on this parameter (PyTorch's per-parameter `step`).
    step: u64,
    /// SGD's momentum buffer (absent before the first step).
    momentum_buffer: Option<Vec<f32>>,
    /// Adam's running average of the gradient.
    exp_avg: Vec<f32>,
    /// Adam's running average of the squared gradient.
    exp_avg_sq: Vec<f32>,
}

/// An optimizer over the parameters of a [`ParameterSet`] whose names start
/// with a prefix (empty: all of them).
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    prefix: String,
    state: BTreeMap<String, ParameterState>,
}

impl Optimizer {
    /// An optimizer over every parameter.
    pub fn new(config: OptimizerConfig) -> Optimizer {
        Optimizer::with_prefix(config, "")
    }

    /// An optimizer over the parameters whose names start with `prefix`.
    pub fn with_prefix(config: OptimizerConfig, prefix: impl Into<String>) -> Optimizer {
        Optimizer {
            config,
            prefix: prefix.into(),
            state: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The prefix of the parameters this optimizer updates.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sets the learning rate used by the next steps (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config = self.config.with_lr(lr);
    }

    /// The largest per-parameter step count (0 before the first step).
    pub fn step_count(&self) -> u64 {
        self.state.values().map(|s| s.step).max().unwrap_or(0)
    }

    /// Whether this optimizer updates the parameter called `name`.
    pub fn covers(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// One update of every covered parameter that has a gradient in `grads`
    /// (parameters without one are left alone, as PyTorch skips parameters
    /// whose `.grad` is `None`).
    pub fn step(&mut self, params: &mut ParameterSet, grads: &GradStore) {
        let gradients: Vec<Option<Tensor>> =
            params.iter().map(|(_, p)| grads.get(p).cloned()).collect();
        self.step_with_gradients(params, &gradients);
    }

    /// One update given the gradients in parameter order (`None`: no
    /// gradient). Gradients of parameters this optimizer does not cover are
    /// ignored.
    ///
    /// # Panics
    /// When `gradients` does not have one entry per parameter or a gradient's
    /// shape differs from its parameter's.
    #[track_caller]
    pub fn step_with_gradients(&mut self, params: &mut ParameterSet, gradients: &[Option<Tensor>]) {
        assert_eq!(
            gradients.len(),
            params.len(),
            "optimizer: {} gradients for {} parameters",
            gradients.len(),
            params.len()
        );
        let mut updates = Vec::new();
        for (index, ((name, param), grad)) in params.iter().zip(gradients).enumerate() {
            let Some(grad) = grad else { continue };
            if !self.covers(name) {
                continue;
            }
            assert_eq!(
                grad.shape(),
                param.shape(),
                "optimizer: gradient of `{name}` has the wrong shape"
            );
            let state = self.state.entry(name.to_string()).or_default();
            let mut value = param.data().to_vec();
            update(&self.config, state, &mut value, grad.data());
            updates.push((index, Tensor::parameter(param.shape(), value)));
        }
        for (index, value) in updates {
            params.replace(index, value);
        }
    }

    /// The state as named tensors, `<parameter>/exp_avg`, `<parameter>/exp_avg_sq`,
    /// `<parameter>/momentum_buffer` and `<parameter>/step` (a one-element
    /// tensor; exact up to 2^24 steps), in name order.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, state) in &self.state {
            out.push((format!("{name}/step"), Tensor::scalar(state.step as f32)));
            if let Some(buffer) = &state.momentum_buffer {
                out.push((
                    format!("{name}/momentum_buffer"),
                    Tensor::from_vec([buffer.len()], buffer.clone()),
                ));
            }
            if !state.exp_avg.is_empty() {
                out.push((
                    format!("{name}/exp_avg"),
                    Tensor::from_vec([state.exp_avg.len()], state.exp_avg.clone()),
                ));
                out.push((
                    format!("{name}/exp_avg_sq"),
                    Tensor::from_vec([state.exp_avg_sq.len()], state.exp_avg_sq.clone()),
                ));
            }
        }
        out
    }

    /// Restores the state exported by [`Optimizer::state_tensors`] (the
    /// buffers are flat; `params` gives the expected sizes). Entries of
    /// parameters this optimizer does not cover are ignored.
    pub fn load_state_tensors(
        &mut self,
        params: &ParameterSet,
        tensors: &[(String, Tensor)],
    ) -> Result<(), OpsError> {
        let mut state: BTreeMap<String, ParameterState> = BTreeMap::new();
        for (key, tensor) in tensors {
            let bad = |reason: String| OpsError::BadMetadata {
                what: "optimizer state".to_string(),
                key: key.clone(),
                reason,
            };
            let (name, field) = key
                .rsplit_once('/')
                .ok_or_else(|| bad("expected `<parameter>/<field>`".to_string()))?;
            if !self.covers(name) {
                continue;
            }
            let param = params
                .try_get(name)
                .ok_or_else(|| bad(format!("no parameter `{name}`")))?;
            let entry = state.entry(name.to_string()).or_default();
            if field == "step" {
                let step = tensor.data().first().copied().unwrap_or(-1.0);
                if tensor.numel() != 1 || step < 0.0 || step.fract() != 0.0 {
                    return Err(bad(format!("expected a step count, got {tensor:?}")));
                }
                entry.step = step as u64;
                continue;
            }
            if tensor.numel() != param.numel() {
                return Err(OpsError::ShapeMismatch {
                    what: "optimizer state".to_string(),
                    name: key.clone(),
                    expected: vec![param.numel()],
                    found: tensor.dims().to_vec(),
                });
            }
            let data = tensor.data().to_vec();
            match field {
                "momentum_buffer" => entry.momentum_buffer = Some(data),
                "exp_avg" => entry.exp_avg = data,
                "exp_avg_sq" => entry.exp_avg_sq = data,
                other => return Err(bad(format!("unknown optimizer state field `{other}`"))),
            }
        }
        for (name, entry) in &state {
            if entry.exp_avg.len() != entry.exp_avg_sq.len() {
                return Err(OpsError::MissingTensor {
                    what: "optimizer state".to_string(),
                    name: format!("{name}/exp_avg or {name}/exp_avg_sq"),
                });
            }
        }
        self.state = state;
        Ok(())
    }
}

/// One update of one parameter, operation by operation as `torch.optim`.
fn update(config: &OptimizerConfig, state: &mut ParameterState, param: &mut [f32], grad: &[f32]) {
    state.step += 1;
    match *config {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } => {
            let mut g = grad.to_vec();
            if weight_decay != 0.0 {
                let wd = weight_decay as f32;
                for (g, &p) in g.iter_mut().zip(param.iter()) {
                    *g += wd * p;
                }
            }
            if momentum != 0.0 {
                let (m, keep) = (momentum as f32, (1.0 - dampening) as f32);
                let buffer = match state.momentum_buffer.take() {
                    None => g.clone(),
                    Some(mut b) => {
                        for (b, &g) in b.iter_mut().zip(&g) {
                            *b = *b * m + keep * g;
                        }
                        b
                    }
                };
                if nesterov {
                    for (g, &b) in g.iter_mut().zip(&buffer) {
                        *g += m * b;
                    }
                } else {
                    g.copy_from_slice(&buffer);
                }
                state.momentum_buffer = Some(buffer);
            }
            let step = -lr as f32;
            for (p, &g) in param.iter_mut().zip(&g) {
                *p += step * g;
            }
        }
        OptimizerConfig::Adam {
            lr,
            betas,
            eps,
            weight_decay,
        } => {
            if weight_decay != 0.0 {
                let wd = weight_decay as f32;
                let g: Vec<f32> = grad
                    .iter()
                    .zip(param.iter())
                    .map(|(&g, &p)| g + wd * p)
                    .collect();
                adam_update(state, param, &g, lr, betas, eps);
            } else {
                adam_update(state, param, grad, lr, betas, eps);
            }
        }
        OptimizerConfig::AdamW {
            lr,
            betas,
            eps,
            weight_decay,
        } => {
            let decay = (1.0 - lr * weight_decay) as f32;
            for p in param.iter_mut() {
                *p *= decay;
            }
            adam_update(state, param, grad, lr, betas, eps);
        }
    }
}

/// Adam's moment updates and parameter step (`torch.optim.adam._single_tensor_adam`).
fn adam_update(
    state: &mut ParameterState,
    param: &mut [f32],
    grad: &[f32],
    lr: f64,
    (beta1, beta2): (f64, f64),
    eps: f64,
) {
    if state.exp_avg.len() != param.len() {
        state.exp_avg = vec![0.0; param.len()];
        state.exp_avg_sq = vec![0.0; param.len()];
    }
    let step = state.step as f64;
    let weight = (1.0 - beta1) as f32;
    let (b2, one_minus_b2) = (beta2 as f32, (1.0 - beta2) as f32);
    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    let step_size = (lr / bias_correction1) as f32;
    let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
    let eps = eps as f32;
    let constants = AdamConstants {
        weight,
        b2,
        one_minus_b2,
        step_size,
        bias_correction2_sqrt,
        eps,
    };
    let (m, v) = (&mut state.exp_avg[..], &mut state.exp_avg_sq[..]);
    crate::kernels::elementwise::wide!(adam_loop(param, grad, m, v, constants));
}

/// The f32 constants of one Adam step.
#[derive(Clone, Copy)]
struct AdamConstants {
    weight: f32,
    b2: f32,
    one_minus_b2: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

/// Adam's elementwise update (through `wide!`: plain arithmetic, the same
/// bits in its baseline, AVX2 and AVX-512 builds).
#[inline(always)]
fn adam_loop(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: AdamConstants) {
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
        // exp_avg.lerp_(grad, 1 - beta1), as ATen's lerp for weight < 0.5
        *m += c.weight * (g - *m);
        *v = *v * c.b2 + c.one_minus_b2 * g * g;
        let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size): self + value * t1 / t2
        *p += -c.step_size * *m / denom;
    }
}

/// Scales the gradients of `params` (those present in `grads`) so that
/// their global 2-norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
/// Sums run in parameter order, each tensor's sum of squares sequentially:
/// the same bits on every machine.
pub fn clip_grad_norm(params: &ParameterSet, grads: &mut GradStore, max_norm: f32) -> f32 {
    let mut total = 0.0f32;
    for (_, p) in params.iter() {
        if let Some(g) = grads.get(p) {
            let norm = g.data().iter().map(|x| x * x).sum::<f32>().sqrt();
            total += norm * norm;
        }
    }
    let total_norm = total.sqrt();
    let coefficient = (max_norm / (total_norm + 1e-6)).min(1.0);
    if coefficient < 1.0 {
        for (_, p) in params.iter() {
            if let Some(g) = grads.remove(p) {
                let scaled: Vec<f32> = g.data().iter().map(|x| x * coefficient).collect();
                grads.accumulate(p, Tensor::from_vec(g.shape(), scaled));
            }
        }
    }
    total_norm
}

/// A learning-rate schedule: the factor applied to the base rate at a step
/// (steps count from 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LearningRateSchedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up from `base / warmup_steps` to the base rate over
    /// `warmup_steps` steps, then constant.
    LinearWarmup {
        /// Steps of warm-up.
        warmup_steps: u64,
    },
    /// Linear warm-up, then a cosine decay to `min_factor * base` at
    /// `total_steps` (and that floor afterwards).
    WarmupCosine {
        /// Steps of warm-up.
        warmup_steps: u64,
        /// Step at which the decay reaches its floor.
        total_steps: u64,
        /// The floor, as a fraction of the base rate.
        min_factor: f64,
    },
}

impl LearningRateSchedule {
    /// The factor at `step`.
    pub fn factor(&self, step: u64) -> f64 {
        let warmup = |warmup_steps: u64| {
            if step < warmup_steps {
                Some((step + 1) as f64 / warmup_steps as f64)
            } else {
                None
            }
        };
        match *self {
            LearningRateSchedule::Constant => 1.0,
            LearningRateSchedule::LinearWarmup { warmup_steps } => {
                warmup(warmup_steps).unwrap_or(1.0)
            }
            LearningRateSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_factor,
            } => warmup(warmup_steps).unwrap_or_else(|| {
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((step - warmup_steps) as f64 / span).min(1.0);
                min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }),
        }
    }

    /// The learning rate at `step` for base rate `base`.
    pub fn lr(&self, base: f64, step: u64) -> f64 {
        base * self.factor(step)
    }
}

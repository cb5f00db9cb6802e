//! The Mamba backbone (Gu & Dao 2023): layers `x + mixer(rms_norm(x))` and
//! a final RMSNorm. The mixer: `in_proj` to (x, residual gate), causal
//! depthwise convolution and SiLU, `x_proj` to (delta, B, C), `dt_proj`,
//! the selective scan (one fused op, softplus of delta inside), the SiLU
//! gate, `out_proj`. Names as `mamba_simple` / mamba-minimal.
use ops::ops::conv::causal_depthwise_conv1d;
use ops::ops::scan::selective_scan;
use ops::{ParameterSet, Tensor, init};

use crate::s4d::state_log_ladder;
use crate::sequence::SequenceConfig;

/// The reference's `RMSNorm` epsilon.
const RMS_EPS: f32 = 1e-5;
/// Expansion of the inner width.
const EXPAND: usize = 2;
/// Width of the causal convolution.
const CONV_WIDTH: usize = 4;

/// Inner sizes of a mixer: (d_inner, dt_rank).
fn sizes(config: &SequenceConfig) -> (usize, usize) {
    (EXPAND * config.d_model, config.d_model.div_ceil(16))
}

/// Inserts each layer's parameters in `state_dict` order, then `norm_f`.
pub(crate) fn init(params: &mut ParameterSet, seed: u64, config: &SequenceConfig) {
    let (d, n) = (config.d_model, config.d_state);
    let (inner, rank) = sizes(config);
    for layer in 0..config.n_layers {
        let p = format!("layers.{layer}");
        params.insert(format!("{p}.norm.weight"), init::constant([d], 1.0));
        let m = format!("{p}.mixer");
        params.insert(format!("{m}.A_log"), state_log_ladder(inner, n));
        params.insert(format!("{m}.D"), init::constant([inner], 1.0));
        init::linear(params, seed, &format!("{m}.in_proj"), d, 2 * inner, false);
        // nn.Conv1d(groups = d_inner): fan_in = kernel width
        let bound = init::fan_in_bound(CONV_WIDTH);
        let name = format!("{m}.conv1d.weight");
        let w = init::uniform(seed, &name, [inner, 1, CONV_WIDTH], bound);
        params.insert(name, w);
        let name = format!("{m}.conv1d.bias");
        let b = init::uniform(seed, &name, [inner], bound);
        params.insert(name, b);
        init::linear(
            params,
            seed,
            &format!("{m}.x_proj"),
            inner,
            rank + 2 * n,
            false,
        );
        init::linear(params, seed, &format!("{m}.dt_proj"), rank, inner, true);
        init::linear(params, seed, &format!("{m}.out_proj"), inner, d, false);
    }
    params.insert("norm_f.weight", init::constant([d], 1.0));
}

/// The Mamba stack over `h` (batch, time, d_model).
pub(crate) fn forward(params: &ParameterSet, config: &SequenceConfig, mut h: Tensor) -> Tensor {
    let (inner, rank) = sizes(config);
    let n = config.d_state;
    for layer in 0..config.n_layers {
        let p = |name: &str| params.get(&format!("layers.{layer}.{name}"));
        let x = h.rms_norm(p("norm.weight"), RMS_EPS);
        let xz = x.linear(p("mixer.in_proj.weight"), None);
        let parts = xz.split(&[inner, inner], -1);
        let (xs, res) = (&parts[0], &parts[1]);
        let xs =
            causal_depthwise_conv1d(xs, p("mixer.conv1d.weight"), Some(p("mixer.conv1d.bias")))
                .silu();
        let dbc = xs.linear(p("mixer.x_proj.weight"), None);
        let parts = dbc.split(&[rank, n, n], -1);
        let delta = parts[0].linear(p("mixer.dt_proj.weight"), Some(p("mixer.dt_proj.bias")));
        let a = p("mixer.A_log").exp().neg();
        let y = selective_scan(&xs, &delta, &a, &parts[1], &parts[2], p("mixer.D"), true);
        let out = y.mul(&res.silu()).linear(p("mixer.out_proj.weight"), None);
        h = h.add(&out);
    }
    h.rms_norm(params.get("norm_f.weight"), RMS_EPS)
}

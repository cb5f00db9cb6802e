//! Selective copying (Mamba paper's synthetic task) with every sequence
//! model on one budget: `cargo run -p models --example selective_copy --
//! [KINDS] [STEPS] [D_MODEL] [N_LAYERS] [D_STATE] [BATCH] [LR] [WARMUP] [LENGTH]`.
//! Prints the accuracy on the data tokens of 256 held-out sequences.
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{CopyBudget, train_selective_copy};
use models::sequence::Backbone;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    let kinds = arg(0, "mamba,s4d,lstm,gru,qrnn");
    let budget = CopyBudget {
        steps: arg(1, "400").parse().unwrap(),
        d_model: arg(2, "32").parse().unwrap(),
        n_layers: arg(3, "2").parse().unwrap(),
        d_state: arg(4, "16").parse().unwrap(),
        batch: arg(5, "32").parse().unwrap(),
        lr: arg(6, "3e-3").parse().unwrap(),
        warmup: arg(7, "20").parse().unwrap(),
        length: arg(8, "256").parse().unwrap(),
    };
    let seed: u64 = arg(9, "1").parse().unwrap();
    println!("{budget:?} seed {seed}");
    for kind in kinds.split(',') {
        let backbone = Backbone::from_kind(kind).unwrap_or_else(|| panic!("unknown kind {kind}"));
        let start = Instant::now();
        let (_, accuracy) = train_selective_copy(
            backbone,
            &budget,
            seed,
            256,
            |step, loss, model| {
                let accuracy = common::copy_accuracy(model, 64, budget.length);
                println!(
                    "{kind} step {step} loss {loss:.4} acc64 {accuracy:.3} ({:.1}s)",
                    start.elapsed().as_secs_f32()
                );
            },
            (budget.steps / 10).max(1),
        );
        println!(
            "RESULT {kind}: data-token accuracy {:.1}% in {:.1}s",
            100.0 * accuracy,
            start.elapsed().as_secs_f32()
        );
    }
}

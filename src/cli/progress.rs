//! Training progress for a person: a progress bar (step, loss, samples per
//! second, time left) when standard error is a terminal, plain periodic
//! lines otherwise (logs, CI, pipes), fed one step report at a time.
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use worker::single_node::TimedStep;

/// How progress is shown.
enum Display {
    /// An indicatif bar on standard error.
    Bar(ProgressBar),
    /// A line on standard error every `every` steps and at the last one.
    Lines { every: u64 },
}

/// The progress of one training run.
pub(crate) struct Progress {
    display: Display,
    total: u64,
    samples_per_step: f64,
    started: Instant,
    /// Smoothed seconds per step (exponential moving average).
    step_seconds: Option<f64>,
    last: Instant,
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

/// The step's losses as `name value` pairs.
pub(crate) fn format_losses(step: &TimedStep) -> String {
    step.report
        .losses
        .iter()
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl Progress {
    /// Progress of `total` steps of `samples_per_step` samples, labelled
    /// `label`; plain lines every `every` steps when standard error is not a
    /// terminal (or `plain` is set).
    pub(crate) fn new(
        label: &str,
        total: u64,
        samples_per_step: usize,
        every: u64,
        plain: bool,
    ) -> Progress {
        let display = if !plain && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:.bold} [{bar:28.cyan/blue}] {pos:>5}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            Display::Bar(bar)
        } else {
            Display::Lines {
                every: every.max(1),
            }
        };
        let now = Instant::now();
        Progress {
            display,
            total,
            samples_per_step: samples_per_step as f64,
            started: now,
            step_seconds: None,
            last: now,
        }
    }

    /// Records a finished step.
    pub(crate) fn step(&mut self, step: &TimedStep) {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.step_seconds = Some(match self.step_seconds {
            None => seconds,
            Some(average) => 0.7 * average + 0.3 * seconds,
        });
        let done = step.report.step + 1;
        let per_step = self.step_seconds.unwrap_or(0.0).max(1e-9);
        let rate = self.samples_per_step / per_step;
        let left = Duration::from_secs_f64(per_step * self.total.saturating_sub(done) as f64);
        let message = format!(
            "{}  {:.0} samples/s  {} left",
            format_losses(step),
            rate,
            format_duration(left)
        );
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            Display::Lines { every } => {
                if done.is_multiple_of(*every) || done == self.total {
                    eprintln!(
                        "step {done:>6}/{}  {}  lr {:.2e}  {:.0} samples/s  {} left",
                        self.total,
                        format_losses(step),
                        step.report.lr,
                        rate,
                        format_duration(left)
                    );
                }
            }
        }
        if !step.evaluation.is_empty() {
            let scores: Vec<String> = step
                .evaluation
                .iter()
                .map(|(name, value)| format!("{name} {value:.4}"))
                .collect();
            let line = format!(
                "step {done:>6}/{}  evaluation: {}",
                self.total,
                scores.join("  ")
            );
            match &self.display {
                Display::Bar(bar) => bar.println(line),
                Display::Lines { .. } => eprintln!("{line}"),
            }
        }
    }

    /// Ends the display; returns the wall time since the start.
    pub(crate) fn finish(self) -> Duration {
        if let Display::Bar(bar) = &self.display {
            bar.finish();
        }
        self.started.elapsed()
    }
}

//! The report folder of a run: loss curves as PNG and SVG (plotters, with a
//! font compiled into the binary so that no system font library is needed),
//! sample grids of generative models as PNG, next to the metrics and the
//! checkpoint that `run::write_outputs` writes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, anyhow, bail};
use models::Model;
use ops::Tensor;
use ops::rng::RandomStream;
use plotters::coord::Shift;
use plotters::prelude::*;

/// DejaVu Sans Mono (Bitstream Vera license, `assets/fonts/`): plotters'
/// `ab_glyph` renderer needs the font's bytes; a static binary has no
/// fontconfig to find one.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");
const FONT_NAME: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font, compiled in: this cannot fail
        // at run time unless the asset is replaced by something else.
        if plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_err() {
            tracing::warn!("the embedded plot font did not load; plots will lack text");
        }
    });
}

/// One curve: a name and its points (step, value).
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// The losses of every step as one series per objective (from the `steps`
/// of a `metrics.json`).
pub(crate) fn loss_series(steps: &[(u64, Vec<(String, f32)>)]) -> Vec<Series> {
    let mut by_name: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut order = Vec::new();
    for (step, losses) in steps {
        for (name, value) in losses {
            if !by_name.contains_key(name) {
                order.push(name.clone());
            }
            by_name
                .entry(name.clone())
                .or_default()
                .push((*step as f64, f64::from(*value)));
        }
    }
    order
        .into_iter()
        .map(|name| Series {
            points: by_name.remove(&name).unwrap_or_default(),
            name,
        })
        .collect()
}

/// An exponential moving average of `points`, as a smoothed curve.
fn smoothed(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let weight = if points.len() > 50 { 0.95 } else { 0.8 };
    let mut average = None;
    points
        .iter()
        .filter(|(_, y)| y.is_finite())
        .map(|&(x, y)| {
            let value = match average {
                None => y,
                Some(a) => weight * a + (1.0 - weight) * y,
            };
            average = Some(value);
            (x, value)
        })
        .collect()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw_curves<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    title: &str,
    series: &[Series],
) -> anyhow::Result<()>
where
    B::ErrorType: 'static,
{
    let plot_error = |error: DrawingAreaErrorKind<B::ErrorType>| anyhow!("plotting: {error}");
    area.fill(&WHITE).map_err(plot_error)?;
    let finite = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in finite {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        bail!("no finite loss to plot");
    }
    let margin = ((y_max - y_min) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&area)
        .caption(title, (FONT_NAME, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_min - margin)..(y_max + margin))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .label_style((FONT_NAME, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_error)?;
    for (index, curve) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let raw: Vec<(f64, f64)> = curve
            .points
            .iter()
            .copied()
            .filter(|(_, y)| y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(raw, color.mix(0.3).stroke_width(1)))
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                smoothed(&curve.points),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(curve.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font((FONT_NAME, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    area.present().map_err(plot_error)?;
    Ok(())
}

/// Writes `STEM.png` and `STEM.svg` with the curves of `series`; returns
/// the two paths.
pub(crate) fn plot_losses(
    folder: &Path,
    stem: &str,
    title: &str,
    series: &[Series],
) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(folder).with_context(|| format!("create {}", folder.display()))?;
    let png = folder.join(format!("{stem}.png"));
    let svg = folder.join(format!("{stem}.svg"));
    draw_curves(
        BitMapBackend::new(&png, (900, 540)).into_drawing_area(),
        title,
        series,
    )
    .with_context(|| format!("write {}", png.display()))?;
    draw_curves(
        SVGBackend::new(&svg, (900, 540)).into_drawing_area(),
        title,
        series,
    )
    .with_context(|| format!("write {}", svg.display()))?;
    Ok(vec![png, svg])
}

/// Writes a grid of square grey images (values in 0..=1, one image per row
/// of `images`) as a PNG, each pixel drawn as a `zoom` x `zoom` block.
pub(crate) fn image_grid(path: &Path, images: &[Vec<f32>], columns: usize) -> anyhow::Result<()> {
    let Some(first) = images.first() else {
        bail!("no image to draw");
    };
    let side = (first.len() as f64).sqrt().round() as usize;
    if side * side != first.len() {
        bail!("images of {} values are not square", first.len());
    }
    let zoom = (64 / side).max(1);
    let gap = 2;
    let columns = columns.max(1).min(images.len());
    let rows = images.len().div_ceil(columns);
    let cell = side * zoom + gap;
    let size = ((columns * cell + gap) as u32, (rows * cell + gap) as u32);
    let area = BitMapBackend::new(path, size).into_drawing_area();
    let plot_error =
        |error: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {error}", path.display());
    area.fill(&RGBColor(40, 40, 40)).map_err(plot_error)?;
    for (index, image) in images.iter().enumerate() {
        let (x0, y0) = (
            gap + (index % columns) * cell,
            gap + (index / columns) * cell,
        );
        for (pixel, value) in image.iter().enumerate() {
            let level = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            let (px, py) = (x0 + (pixel % side) * zoom, y0 + (pixel / side) * zoom);
            area.draw(&Rectangle::new(
                [
                    (px as i32, py as i32),
                    ((px + zoom) as i32, (py + zoom) as i32),
                ],
                RGBColor(level, level, level).filled(),
            ))
            .map_err(plot_error)?;
        }
    }
    area.present().map_err(plot_error)?;
    Ok(())
}

/// Number of samples in a grid.
const GRID_SAMPLES: usize = 64;

/// Draws samples of a trained generative model whose data are square
/// images (a VAE's decoder means, a GAN's generator outputs, both from
/// standard normal latents drawn under `seed`), one row of values per
/// image in the model's input scale; `None` when the model kind has no
/// sampler or its samples are not square images.
pub(crate) fn samples(
    kind: &str,
    config: &serde_json::Value,
    checkpoint: &[u8],
    seed: u64,
) -> anyhow::Result<Option<Vec<Vec<f32>>>> {
    let file = ops::checkpoint::decode(checkpoint, "the checkpoint")?;
    let latents =
        |d_latent: usize| {
            RandomStream::new(seed, ops::rng::stream_id(&[0x5a4d, GRID_SAMPLES as u64]))
                .normal_tensor([GRID_SAMPLES, d_latent], 0.0, 1.0)
        };
    let images: Tensor = match kind {
        "vae" => {
            let mut model = models::vae::Vae::from_config(config, seed)?;
            ops::checkpoint::load_parameters(&file, "the checkpoint", model.parameters_mut())?;
            let d_latent = model.parameters().get("enc_mu.weight").dim(0);
            model.decode(&latents(d_latent)).sigmoid()
        }
        "gan" => {
            let mut model = models::gan::Gan::from_config(config, seed)?;
            ops::checkpoint::load_parameters(&file, "the checkpoint", model.parameters_mut())?;
            let d_latent = model.parameters().get("generator.fc1.weight").dim(1);
            model.generate(&latents(d_latent))
        }
        _ => return Ok(None),
    };
    let width = images.dim(1);
    let side = (width as f64).sqrt().round() as usize;
    if side < 4 || side * side != width {
        return Ok(None);
    }
    Ok(Some(
        images
            .data()
            .chunks(width)
            .map(|row| row.to_vec())
            .collect(),
    ))
}

/// Writes the plots of a finished single-node run into `out`: `loss.png`
/// and `loss.svg`, and `samples.png` for a VAE or GAN on images. Returns
/// the paths written.
pub(crate) fn write_report(
    out: &Path,
    prepared: &crate::cli::run::PreparedJob,
    summary: &crate::cli::run::RunSummary,
) -> anyhow::Result<Vec<PathBuf>> {
    let steps: Vec<(u64, Vec<(String, f32)>)> = summary
        .steps
        .iter()
        .map(|s| {
            (
                s.report.step,
                s.report
                    .losses
                    .iter()
                    .map(|(name, value)| (name.to_string(), *value))
                    .chain(
                        s.evaluation
                            .iter()
                            .map(|(name, value)| (name.clone(), *value as f32)),
                    )
                    .collect(),
            )
        })
        .collect();
    let title = format!("{} ({})", prepared.name, prepared.job.model_kind);
    // A job resumed from a checkpoint of its last step trains nothing.
    let mut written = if steps.is_empty() {
        eprintln!("no step was trained (the job starts at its last step): no loss curve");
        Vec::new()
    } else {
        plot_losses(out, "loss", &title, &loss_series(&steps))?
    };
    if let Some(images) = samples(
        &prepared.job.model_kind,
        &prepared.job.model_config,
        &summary.report.checkpoint,
        prepared.job.seed,
    )? {
        let path = out.join("samples.png");
        image_grid(&path, &images, 8)?;
        written.push(path);
    }
    Ok(written)
}

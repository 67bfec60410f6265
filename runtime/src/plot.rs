//! Pictures of a training run: loss and accuracy against the epoch, drawn from the metrics
//! records, as PNG to look at and SVG to put in documents. Text is drawn with DejaVu Sans
//! embedded in the binary, so plotting needs no fonts or font libraries on the machine.

use std::fmt;
use std::io::{Cursor, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::checkpoint::write_atomically;
use crate::metrics::EpochRecord;

/// Why a plot could not be made; the message names the file.
#[derive(Debug)]
pub struct PlotError(pub String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlotError {}

const SIZE: (u32, u32) = (1200, 500);
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOR: RGBColor = RGBColor(255, 127, 14);

/// One panel's curves: the values an epoch record holds for training and for validation.
struct Panel {
    caption: &'static str,
    y_label: &'static str,
    train: fn(&EpochRecord) -> f64,
    validation: fn(&EpochRecord) -> Option<f64>,
    /// Accuracies are fractions, so their axis never leaves [0, 1].
    bounds: Option<Range<f64>>,
    legend_position: SeriesLabelPosition,
}

const PANELS: [Panel; 2] = [
    Panel {
        caption: "Loss",
        y_label: "loss",
        train: |record| record.train_loss,
        validation: |record| record.val_loss,
        bounds: None,
        legend_position: SeriesLabelPosition::UpperRight,
    },
    Panel {
        caption: "Accuracy",
        y_label: "accuracy",
        train: |record| record.train_acc,
        validation: |record| record.val_acc,
        bounds: Some(0.0..1.0),
        legend_position: SeriesLabelPosition::LowerRight,
    },
];

/// The training curves: two panels side by side, loss (train and validation) and accuracy (train
/// and validation) against the epoch, with axis labels, a legend and `title`; written as PNG and
/// as SVG. Epochs without validation draw only the training curve; non-finite values (a diverged
/// loss) are left out.
pub fn plot_training(
    epochs: &[EpochRecord],
    title: &str,
    png: &Path,
    svg: &Path,
) -> Result<(), PlotError> {
    register_embedded_font()?;

    let mut pixels = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    draw(
        BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area(),
        epochs,
        title,
    )
    .map_err(|error| PlotError(format!("{}: cannot draw the plot: {error}", png.display())))?;
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels)
        .expect("the buffer was allocated for SIZE");
    let mut encoded = Cursor::new(Vec::new());
    image
        .write_to(&mut encoded, image::ImageFormat::Png)
        .map_err(|error| PlotError(format!("{}: cannot encode PNG: {error}", png.display())))?;
    write_file(png, encoded.get_ref())?;

    let mut document = String::new();
    draw(
        SVGBackend::with_string(&mut document, SIZE).into_drawing_area(),
        epochs,
        title,
    )
    .map_err(|error| PlotError(format!("{}: cannot draw the plot: {error}", svg.display())))?;
    write_file(svg, document.as_bytes())
}

/// Plotters draws text only with fonts registered under a family name; the embedded one is
/// registered once per process.
fn register_embedded_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(PlotError(
            "the embedded DejaVu Sans font cannot be read".to_string(),
        ))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    write_atomically(path, |file| file.write_all(bytes)).map_err(|error| {
        PlotError(format!(
            "{}: cannot write the plot: {error}",
            path.display()
        ))
    })
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    epochs: &[EpochRecord],
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 26))?;
    let halves = root.split_evenly((1, 2));
    for (area, panel) in halves.iter().zip(&PANELS) {
        draw_panel(area, panel, epochs)?;
    }
    root.present()
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    epochs: &[EpochRecord],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let finite = |points: Vec<(usize, f64)>| -> Vec<(usize, f64)> {
        points.into_iter().filter(|(_, y)| y.is_finite()).collect()
    };
    let train = finite(
        epochs
            .iter()
            .map(|record| (record.epoch, (panel.train)(record)))
            .collect(),
    );
    let validation = finite(
        epochs
            .iter()
            .filter_map(|record| Some((record.epoch, (panel.validation)(record)?)))
            .collect(),
    );

    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            epoch_range(epochs),
            value_range(
                train.iter().chain(&validation).map(|&(_, y)| y),
                &panel.bounds,
            ),
        )?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.y_label)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .draw()?;

    for (name, color, points) in [
        ("train", TRAIN_COLOR, train),
        ("validation", VALIDATION_COLOR, validation),
    ] {
        if points.is_empty() {
            continue;
        }
        // The markers keep a run of a single epoch, which has no line, visible.
        chart.draw_series(
            points
                .iter()
                .map(|&point| Circle::new(point, 2, color.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(panel.legend_position.clone())
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// The epochs on the x axis; a single epoch gets a neighbour so the axis has a length.
fn epoch_range(epochs: &[EpochRecord]) -> Range<usize> {
    let first = epochs.iter().map(|record| record.epoch).min().unwrap_or(0);
    let last = epochs.iter().map(|record| record.epoch).max().unwrap_or(0);
    if first < last {
        first..last
    } else {
        first.saturating_sub(1)..first + 1
    }
}

/// The y axis: the values with a margin so no point sits on the frame, within `bounds`.
fn value_range(values: impl Iterator<Item = f64>, bounds: &Option<Range<f64>>) -> Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), y| {
        (low.min(y), high.max(y))
    });
    let (low, high) = if low > high {
        (0.0, 1.0)
    } else {
        let margin = if high > low {
            (high - low) * 0.05
        } else {
            low.abs().max(1.0) * 0.1
        };
        (low - margin, high + margin)
    };
    match bounds {
        // Values wholly outside the bounds would leave an empty range; show the bounds instead.
        Some(bounds) if low.max(bounds.start) >= high.min(bounds.end) => bounds.clone(),
        Some(bounds) => low.max(bounds.start)..high.min(bounds.end),
        None => low..high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, validation: bool) -> EpochRecord {
        let progress = epoch as f64;
        EpochRecord {
            epoch,
            train_loss: 2.3 / progress,
            train_acc: 1.0 - 0.9 / progress,
            val_loss: validation.then(|| 2.5 / progress),
            val_acc: validation.then(|| 1.0 - 1.0 / progress),
            lr: 0.1,
            wall_s: 2.0,
            images_per_s: 30000.0,
        }
    }

    /// Plots `epochs` into a temporary directory and returns the PNG's pixels and the SVG.
    fn plot(epochs: &[EpochRecord]) -> (image::RgbImage, String) {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("curves.png");
        let svg = dir.path().join("curves.svg");
        plot_training(epochs, "mlp on MNIST", &png, &svg).unwrap();
        let decoded = image::open(&png).unwrap().to_rgb8();
        let document = std::fs::read_to_string(&svg).unwrap();
        assert!(document.contains("mlp on MNIST"));
        (decoded, document)
    }

    #[test]
    fn plots_train_and_validation_curves() {
        let epochs: Vec<_> = (1..=10).map(|epoch| record(epoch, true)).collect();
        let (png, svg) = plot(&epochs);
        assert_eq!(png.dimensions(), SIZE);
        for text in ["train", "validation", "epoch", "loss", "accuracy"] {
            assert!(svg.contains(text), "the SVG lacks {text}");
        }
    }

    #[test]
    fn plots_a_single_epoch() {
        let (png, svg) = plot(&[record(1, true)]);
        assert_eq!(png.dimensions(), SIZE);
        assert!(svg.contains("validation"));
    }

    #[test]
    fn plots_only_training_without_validation() {
        let epochs: Vec<_> = (1..=5).map(|epoch| record(epoch, false)).collect();
        let (_, svg) = plot(&epochs);
        assert!(svg.contains("train"));
        assert!(!svg.contains("validation"));
    }

    #[test]
    fn plots_many_epochs_and_a_diverged_loss() {
        let mut epochs: Vec<_> = (1..=500)
            .map(|epoch| record(epoch, epoch % 5 == 0))
            .collect();
        epochs[400].train_loss = f64::NAN;
        epochs[401].train_loss = f64::INFINITY;
        let (png, _) = plot(&epochs);
        assert_eq!(png.dimensions(), SIZE);
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("missing-directory/curves.png");
        let error =
            plot_training(&[record(1, true)], "t", &png, &dir.path().join("c.svg")).unwrap_err();
        assert!(error.to_string().contains("curves.png"), "{error}");
    }
}

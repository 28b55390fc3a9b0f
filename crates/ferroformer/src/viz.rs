//! Pictures of what a transformer computes: the positional-encoding matrix and attention
//! weights, as PNG heatmaps.
//!
//! Values map to a perceptually ordered palette (dark blue → yellow, like viridis); each
//! panel is scaled to its own minimum and maximum.

use std::path::Path;

use candle_core::{DType, Tensor};
use plotters::prelude::*;

use crate::error::{Error, Result};

/// Viridis, sampled at 9 points; values in between are interpolated.
const PALETTE: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// The palette colour of `t` in `[0, 1]`.
pub fn color(t: f32) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (PALETTE.len() - 1) as f32;
    let i = (x.floor() as usize).min(PALETTE.len() - 2);
    let f = x - i as f32;
    let lerp = |a: u8, b: u8| (a as f32 + (b as f32 - a as f32) * f).round() as u8;
    let (a, b) = (PALETTE[i], PALETTE[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

fn to_matrix(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("cannot draw PNG: {e}"))
}

/// Draws matrices side by side in a grid (`columns` panels per row), each cell
/// `cell` pixels square, with a small gap between panels.
pub fn heatmap_grid(path: &Path, panels: &[Tensor], columns: usize, cell: u32) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::Invalid("nothing to draw: no panels".into()));
    }
    let mats = panels.iter().map(to_matrix).collect::<Result<Vec<_>>>()?;
    let rows_n = mats[0].len();
    let cols_n = mats[0].first().map_or(0, |r| r.len());
    if rows_n == 0
        || cols_n == 0
        || mats
            .iter()
            .any(|m| m.len() != rows_n || m[0].len() != cols_n)
    {
        return Err(Error::Invalid(
            "panels must be non-empty matrices of one shape".into(),
        ));
    }
    let columns = columns.clamp(1, mats.len());
    let grid_rows = mats.len().div_ceil(columns);
    let gap = 8u32;
    let pw = cols_n as u32 * cell;
    let ph = rows_n as u32 * cell;
    let width = columns as u32 * pw + (columns as u32 + 1) * gap;
    let height = grid_rows as u32 * ph + (grid_rows as u32 + 1) * gap;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
    for (n, m) in mats.iter().enumerate() {
        let (lo, hi) = m
            .iter()
            .flatten()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let x0 = gap + (n % columns) as u32 * (pw + gap);
        let y0 = gap + (n / columns) as u32 * (ph + gap);
        for (r, row) in m.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let x = (x0 + c as u32 * cell) as i32;
                let y = (y0 + r as u32 * cell) as i32;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    color((v - lo) / span).filled(),
                ))
                .map_err(|e| draw_error(path, e))?;
            }
        }
    }
    root.present().map_err(|e| draw_error(path, e))?;
    Ok(())
}

/// Draws a `(positions, d_model)` positional-encoding matrix: one row per position.
pub fn positional_encoding_png(path: &Path, table: &Tensor, cell: u32) -> Result<()> {
    heatmap_grid(path, std::slice::from_ref(table), 1, cell)
}

/// Draws attention weights `(heads, q_len, k_len)`, one panel per head, four per row.
pub fn attention_png(path: &Path, weights: &Tensor, cell: u32) -> Result<()> {
    let (h, _, _) = weights
        .dims3()
        .map_err(|_| Error::shape("attention weights", "(heads, q_len, k_len)", weights.dims()))?;
    let panels = (0..h)
        .map(|i| weights.get(i))
        .collect::<candle_core::Result<Vec<_>>>()?;
    heatmap_grid(path, &panels, 4, cell)
}

/// Draws training (blue line) and validation (orange line with dots) loss against steps
/// on one set of axes, y from 0 to the largest loss, light grid lines at each unit of loss.
pub fn loss_curves_png(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)]) -> Result<()> {
    let (w, h, margin) = (800i32, 500i32, 40i32);
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
    let all = train.iter().chain(val.iter());
    let max_step = all.clone().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let max_loss = all
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .fold(0f64, f64::max)
        .max(1e-9)
        .ceil();
    let x = |s: u64| margin + ((s as f64 / max_step) * (w - 2 * margin) as f64) as i32;
    let y = |l: f64| h - margin - ((l / max_loss) * (h - 2 * margin) as f64) as i32;
    let grey = RGBColor(225, 225, 225);
    for k in 0..=(max_loss as i64) {
        let yy = y(k as f64);
        root.draw(&PathElement::new(
            vec![(margin, yy), (w - margin, yy)],
            grey,
        ))
        .map_err(|e| draw_error(path, e))?;
    }
    let axes = vec![
        (margin, margin),
        (margin, h - margin),
        (w - margin, h - margin),
    ];
    root.draw(&PathElement::new(axes, BLACK))
        .map_err(|e| draw_error(path, e))?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let line = |pts: &[(u64, f64)]| -> Vec<(i32, i32)> {
        pts.iter()
            .filter(|p| p.1.is_finite())
            .map(|&(s, l)| (x(s), y(l)))
            .collect()
    };
    root.draw(&PathElement::new(line(train), blue.stroke_width(1)))
        .map_err(|e| draw_error(path, e))?;
    root.draw(&PathElement::new(line(val), orange.stroke_width(2)))
        .map_err(|e| draw_error(path, e))?;
    for p in line(val) {
        root.draw(&Circle::new(p, 3, orange.filled()))
            .map_err(|e| draw_error(path, e))?;
    }
    root.present().map_err(|e| draw_error(path, e))?;
    Ok(())
}

/// Digits 0-9 in a 3×5 pixel font, one row per `u8` (bit 2 is the left column): plotters is
/// built without a font engine, and a confusion matrix needs only its counts.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Draws `n` in the pixel font, centred on `(cx, cy)`, each font pixel `px` pixels square.
fn draw_number<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    n: usize,
    (cx, cy): (i32, i32),
    px: i32,
    colour: RGBColor,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let text = n.to_string();
    let width = text.len() as i32 * 4 * px - px;
    let (x0, y0) = (cx - width / 2, cy - 5 * px / 2);
    for (k, ch) in text.bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    let x = x0 + (k as i32 * 4 + col) * px;
                    let y = y0 + row as i32 * px;
                    area.draw(&Rectangle::new([(x, y), (x + px, y + px)], colour.filled()))?;
                }
            }
        }
    }
    Ok(())
}

/// Draws a confusion matrix (`matrix[true][predicted]` counts, labels in the same order on
/// both axes) as a grid of `cell`-pixel squares: each cell coloured by its share of its row
/// (the recall of the true label on the diagonal), its count written in it.
pub fn confusion_matrix_png(path: &Path, matrix: &[Vec<usize>], cell: u32) -> Result<()> {
    let n = matrix.len();
    if n == 0 || matrix.iter().any(|row| row.len() != n) {
        return Err(Error::Invalid(format!(
            "a confusion matrix is square with one row per label; found {n} rows of lengths {:?}",
            matrix.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    let cell = cell.max(16) as i32;
    let side = u32::try_from(n as i64 * cell as i64)
        .ok()
        .filter(|&s| s <= 16_384)
        .ok_or_else(|| Error::Invalid(format!("{n} labels make too large a picture")))?;
    let root = BitMapBackend::new(path, (side, side)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(path, e))?;
    let largest = matrix.iter().flatten().copied().max().unwrap_or(0);
    // Font pixels: the widest count fills at most 3/4 of a cell.
    let digits = largest.max(1).to_string().len() as i32;
    let px = (cell * 3 / 4 / (4 * digits - 1)).clamp(1, cell / 8 + 1);
    for (t, row) in matrix.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                count as f32 / total as f32
            };
            let (x, y) = (p as i32 * cell, t as i32 * cell);
            root.draw(&Rectangle::new(
                [(x, y), (x + cell - 1, y + cell - 1)],
                color(share).filled(),
            ))
            .map_err(|e| draw_error(path, e))?;
            // Dark text on the light (yellow-green) end of the palette, white on the dark end.
            let ink = if share > 0.6 { BLACK } else { WHITE };
            draw_number(&root, count, (x + cell / 2, y + cell / 2), px, ink)
                .map_err(|e| draw_error(path, e))?;
        }
    }
    root.present().map_err(|e| draw_error(path, e))?;
    Ok(())
}

//! Quantized products `x W^T` on ferroformer's kernels against candle's `QMatMul`, per
//! block format and activation row count (1: decode, 4: a few batched sequences, 16: the
//! server's largest decode batch and a short prompt chunk).
//!
//! `cargo bench -p ferroformer --bench qmatmul -- [--n 2048] [--k 2048] [--json]
//! [--formats Q4_K,Q6_K,Q5_K,Q3_K,Q4_1,Q8_0,Q5_0,Q5_1,Q4_0,Q2_K] [--rows 1,4,16] [--no-candle]`
//! Prints, per (format, rows), the median time of one product over alternating rounds of
//! both sides and the ratio candle / ours (> 1: ours faster). Threads follow
//! `RAYON_NUM_THREADS` (candle's CPU kernels use their own pool of the same size).
//! `--no-candle` times ours alone (candle's scalar Q4_1/Q5_x products take seconds at 64 rows).

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ferroformer::nn::QuantizedMatrix;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
}

/// Median seconds of `f` over `reps` calls, after one warm-up call.
fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n").unwrap_or(2048);
    let k: usize = arg(&args, "--k").unwrap_or(2048);
    let json = args.iter().any(|a| a == "--json");
    let no_candle = args.iter().any(|a| a == "--no-candle");
    let formats: String =
        arg(&args, "--formats").unwrap_or_else(|| "Q4_K,Q6_K,Q4_1,Q4_0,Q2_K".to_string());
    let row_counts: Vec<usize> = arg::<String>(&args, "--rows")
        .unwrap_or_else(|| "1,4,16".to_string())
        .split(',')
        .map(|r| r.trim().parse())
        .collect::<Result<_, _>>()?;
    let dev = Device::Cpu;
    let w: Vec<f32> = (0..n * k)
        .map(|i| (i as f32 * 0.618).sin() * 0.05)
        .collect();
    let w = Tensor::from_vec(w, (n, k), &dev)?;
    for name in formats.split(',').map(str::trim) {
        let dtype = match name {
            "Q4_K" => GgmlDType::Q4K,
            "Q6_K" => GgmlDType::Q6K,
            "Q5_K" => GgmlDType::Q5K,
            "Q3_K" => GgmlDType::Q3K,
            "Q4_1" => GgmlDType::Q4_1,
            "Q8_0" => GgmlDType::Q8_0,
            "Q5_0" => GgmlDType::Q5_0,
            "Q5_1" => GgmlDType::Q5_1,
            "Q4_0" => GgmlDType::Q4_0,
            "Q2_K" => GgmlDType::Q2K,
            other => anyhow::bail!("--formats: unknown format {other:?}"),
        };
        let q = QTensor::quantize(&w, dtype)?;
        let ours = QuantizedMatrix::new(QTensor::quantize(&w, dtype)?)?;
        for &rows in &row_counts {
            let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).cos()).collect();
            let x = Tensor::from_vec(x, (rows, k), &dev)?;
            // Enough calls for ~0.2 s per side and round.
            let reps = (2e8 / (n * k * rows) as f64).clamp(5.0, 400.0) as usize;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                a.push(time(reps, || {
                    ours.matmul_t(&x).unwrap();
                }));
                if !no_candle {
                    b.push(time(reps, || {
                        x.apply_op1_no_bwd(&q).unwrap();
                    }));
                } else {
                    b.push(f64::NAN);
                }
            }
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            let (a, b) = (a[1], b[1]);
            if json {
                println!(
                    "{{\"format\": \"{name}\", \"rows\": {rows}, \"n\": {n}, \"k\": {k}, \
                     \"ours_us\": {:.1}, \"candle_us\": {:.1}, \"ratio\": {:.2}}}",
                    a * 1e6,
                    b * 1e6,
                    b / a
                );
            } else {
                println!(
                    "{name} {rows:>2} rows ({n}x{k}): ours {:>8.1} us, candle {:>8.1} us, candle/ours {:.2}x",
                    a * 1e6,
                    b * 1e6,
                    b / a
                );
            }
        }
    }
    Ok(())
}

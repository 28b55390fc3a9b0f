//! The numeric comparison helpers of `tests/common` fail on NaN and infinity: candle's CPU
//! `max` skips a NaN unless it is the first element, so a check built on it passed on
//! outputs full of NaN.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, max_abs, max_abs_diff, max_abs_diff_values};

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

#[test]
fn assert_close_accepts_close_values() {
    assert_close(
        "close",
        &t(&[1.0, 2.0, 3.0]),
        &t(&[1.0, 2.0 + 1e-6, 3.0]),
        1e-5,
    );
}

#[test]
#[should_panic(expected = "non-finite value at flat index 1")]
fn assert_close_fails_on_nan_after_the_first_element() {
    assert_close("nan", &t(&[1.0, f32::NAN, 3.0]), &t(&[1.0, 2.0, 3.0]), 1e-5);
}

#[test]
#[should_panic(expected = "non-finite value at flat index 2")]
fn assert_close_fails_on_nan_in_the_reference() {
    assert_close("nan", &t(&[1.0, 2.0, 3.0]), &t(&[1.0, 2.0, f32::NAN]), 1e-5);
}

#[test]
#[should_panic(expected = "non-finite value at flat index 0")]
fn assert_close_fails_on_nan_everywhere() {
    let nan = [f32::NAN; 4];
    assert_close("all nan", &t(&nan), &t(&nan), 1.0);
}

#[test]
#[should_panic(expected = "non-finite value at flat index 1")]
fn assert_close_fails_on_infinity() {
    assert_close("inf", &t(&[1.0, f32::INFINITY]), &t(&[1.0, 2.0]), 1e-5);
}

#[test]
#[should_panic(expected = "non-finite value at flat index 0")]
fn assert_close_fails_on_opposite_infinities() {
    assert_close(
        "inf",
        &t(&[f32::INFINITY, 1.0]),
        &t(&[f32::NEG_INFINITY, 1.0]),
        1e-5,
    );
}

#[test]
fn the_same_infinity_on_both_sides_is_no_difference() {
    // A masked attention score is -inf in both implementations.
    let a = t(&[f32::NEG_INFINITY, 0.5]);
    assert_close("masked", &a, &a.clone(), 0.0);
    assert_eq!(max_abs_diff(&a, &a), 0.0);
}

#[test]
#[should_panic(expected = "max abs diff")]
fn assert_close_fails_beyond_the_tolerance() {
    assert_close("far", &t(&[1.0, 2.0]), &t(&[1.0, 2.5]), 0.1);
}

#[test]
#[should_panic(expected = "reference is all zeros")]
fn assert_close_fails_on_an_all_zero_reference() {
    assert_close("zeros", &t(&[0.0, 0.0]), &t(&[0.0, 0.0]), 0.1);
}

#[test]
#[should_panic(expected = "non-finite value")]
fn max_abs_diff_fails_on_nan() {
    max_abs_diff(&t(&[0.0, f32::NAN, 0.0]), &t(&[0.0, 0.0, 0.0]));
}

#[test]
#[should_panic(expected = "non-finite value")]
fn max_abs_diff_values_fails_on_nan_in_f64() {
    max_abs_diff_values("f64", &[1.0f64, f64::NAN], &[1.0, 1.0]);
}

#[test]
#[should_panic(expected = "non-finite value")]
fn max_abs_fails_on_nan() {
    max_abs("scale", &t(&[1.0, f32::NAN]));
}

#[test]
fn max_abs_diff_is_the_largest_difference() {
    assert_eq!(
        max_abs_diff(&t(&[1.0, -2.0, 3.0]), &t(&[1.5, 2.0, 3.0])),
        4.0
    );
    assert_eq!(max_abs("scale", &t(&[1.0, -7.0, 3.0])), 7.0);
}

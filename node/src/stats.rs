//! Statistics for the experiment results page (docs/semantics.md, "Comparisons").
//!
//! Everything is derived from the math with std only:
//!
//! - The normal CDF uses the everywhere-positive series
//!   `Φ(x) = 1/2 + φ(x) · Σ x^(2n+1) / (2n+1)!!` for `|x| < 1.5`, and the Laplace continued
//!   fraction of the Mills ratio `Q(z) = φ(z) / (z + 1/(z + 2/(z + 3/(z + …))))` in the tails.
//!   Both are summed to full double precision: absolute error ≲ 4e-16, and relative error
//!   ≲ 5e-15 in the lower tail down to x ≈ −37.5 (beyond, Φ is subnormal and loses digits).
//! - The Student t CDF uses `P(T > |t|) = I_x(ν/2, 1/2) / 2` with `x = ν / (ν + t²)`, the
//!   regularized incomplete beta function by its continued fraction (DLMF 8.17.22) and the
//!   log-gamma function by the Stirling series. Above `STUDENT_T_NORMAL_DEGREES_OF_FREEDOM`
//!   the expansion of the t CDF around the normal CDF in 1/ν takes over (error O(ν⁻³)).
//!   Absolute error ≲ 2e-15 for ν ≤ 1000 and ≲ 1e-13 above.
//! - Quantiles invert those CDFs by safeguarded Newton iteration.
//!
//! Building blocks propagate NaN (NaN in, NaN out) and map infinities to their limits; the
//! comparisons return `None` rather than a result with a non-finite field.

use std::f64::consts::PI;

/// The 97.5% quantile of the standard normal distribution: the multiplier of a two-sided 95%
/// interval. A constant (checked against `normal_quantile` in the tests) so that a comparison
/// does not have to solve for it every time.
const NORMAL_QUANTILE_975: f64 = 1.959_963_984_540_054;

/// The upper probability whose quantile bounds a two-sided 95% interval.
const INTERVAL_95_QUANTILE_PROBABILITY: f64 = 0.975;

/// Below this magnitude the normal series converges fast; above it the Mills-ratio continued
/// fraction does (from 1.5 on it is exact to 5e-18 with 200 terms), and unlike the series it
/// keeps relative precision in the lower tail (the series computes Φ(x) as 1/2 − something).
const NORMAL_SERIES_MAGNITUDE_MAX: f64 = 1.5;
const NORMAL_CONTINUED_FRACTION_TERMS: u32 = 200;
const NORMAL_SERIES_TERMS_MAX: u32 = 200;

/// Φ(−40) underflows to zero, so every representable positive probability has its normal
/// quantile above this bound.
const NORMAL_QUANTILE_MIN: f64 = -40.0;

/// φ(x) underflows to zero beyond this magnitude (exp(−800) < 5e−324).
const NORMAL_DENSITY_MAGNITUDE_MAX: f64 = 40.0;

/// The Stirling series for log-gamma is used from this argument on (smaller arguments are
/// shifted up by the recurrence Γ(z + 1) = z Γ(z)); with terms up to z⁻¹³ it is then exact to
/// double precision.
const STIRLING_ARGUMENT_MIN: f64 = 10.0;

/// The incomplete beta continued fraction needs O(√max(a, b)) terms near its switch-over point;
/// a = ν/2 ≤ 1.5e4 here, so this bound is never reached in practice.
const INCOMPLETE_BETA_TERMS_MAX: u32 = 100_000;

/// Above this many degrees of freedom the Student t CDF is the normal CDF plus its 1/ν and
/// 1/ν² corrections, whose error O(ν⁻³) is about 2e-14 here, while the continued fraction
/// needs ever more terms (O(√ν)) and accumulates their rounding (about 1e-13 here).
const STUDENT_T_NORMAL_DEGREES_OF_FREEDOM: f64 = 3e4;

const SOLVER_ITERATIONS_MAX: u32 = 200;

/// A comparison of a variation against the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub relative_improvement: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

/// Sample summary: n observations, their sum and their sum of squares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub count: f64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl Sample {
    /// The sample mean; 0 for an empty sample (there is nothing to average, and NaN would
    /// leak into the results page).
    pub fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }

    /// The unbiased (n − 1) sample variance; 0 if n < 2.
    pub fn variance(&self) -> f64 {
        if self.count.is_nan() || self.count < 2.0 {
            return 0.0;
        }
        let variance = (self.sum_squares - self.sum * self.mean()) / (self.count - 1.0);
        // Cancellation can leave a tiny negative number where the true variance is zero,
        // and a NaN only arises from non-finite sums: neither is a variance.
        variance.max(0.0)
    }

    fn is_finite(&self) -> bool {
        self.count.is_finite() && self.sum.is_finite() && self.sum_squares.is_finite()
    }
}

/// Two-proportion comparison: baseline (conversions_baseline of visitors_baseline) vs variation.
/// relative improvement (p − p_b)/p_b; 95% CI = unpooled normal interval of (p − p_b), divided by
/// p_b; p-value = two-sided pooled two-proportion z-test. None if either visitors is 0 or
/// p_b == 0, and for impossible counts (negative, or more conversions than visitors).
pub fn compare_rates(
    conversions_baseline: i64,
    visitors_baseline: i64,
    conversions: i64,
    visitors: i64,
) -> Option<Comparison> {
    if visitors_baseline <= 0 || visitors <= 0 {
        return None;
    }
    if !(1..=visitors_baseline).contains(&conversions_baseline) {
        return None; // A zero baseline rate has no relative improvement.
    }
    if !(0..=visitors).contains(&conversions) {
        return None;
    }
    // Counts are far below 2^53, so the conversions are exact.
    let conversions_baseline = conversions_baseline as f64;
    let visitors_baseline = visitors_baseline as f64;
    let conversions = conversions as f64;
    let visitors = visitors as f64;

    let rate_baseline = conversions_baseline / visitors_baseline;
    let rate = conversions / visitors;
    let difference = rate - rate_baseline;

    // The interval does not assume the null hypothesis, so each rate keeps its own variance.
    let standard_error = (rate_baseline * (1.0 - rate_baseline) / visitors_baseline
        + rate * (1.0 - rate) / visitors)
        .sqrt();
    let margin = NORMAL_QUANTILE_975 * standard_error;

    // The test does assume the null hypothesis (equal rates), so it pools both groups.
    let rate_pooled = (conversions_baseline + conversions) / (visitors_baseline + visitors);
    let standard_error_pooled =
        (rate_pooled * (1.0 - rate_pooled) * (1.0 / visitors_baseline + 1.0 / visitors)).sqrt();
    let p_value = p_value_two_sided(difference, standard_error_pooled, normal_cdf);

    comparison_relative(difference, margin, rate_baseline, p_value)
}

/// Welch's t-test of means: relative improvement of mean, 95% CI of (mean − mean_b) using the
/// Student t quantile with Welch–Satterthwaite degrees of freedom, divided by mean_b; two-sided
/// p-value from Student t. None if either count < 2 or mean_b == 0, or if any input or result
/// is not finite. If both variances are 0: p-value 1 if means equal else 0, CI = point.
/// With a negative mean_b the interval bounds are swapped so that ci_low ≤ ci_high.
pub fn compare_means(baseline: Sample, variation: Sample) -> Option<Comparison> {
    if !baseline.is_finite() || !variation.is_finite() {
        return None;
    }
    if baseline.count < 2.0 || variation.count < 2.0 {
        return None;
    }
    let mean_baseline = baseline.mean();
    if mean_baseline == 0.0 {
        return None;
    }
    let difference = variation.mean() - mean_baseline;

    let variance_of_mean_baseline = baseline.variance() / baseline.count;
    let variance_of_mean_variation = variation.variance() / variation.count;
    let variance_of_difference = variance_of_mean_baseline + variance_of_mean_variation;
    if !variance_of_difference.is_finite() {
        return None;
    }
    if variance_of_difference == 0.0 {
        // No spread at all: the difference is known exactly.
        let p_value = if difference == 0.0 { 1.0 } else { 0.0 };
        return comparison_relative(difference, 0.0, mean_baseline, p_value);
    }

    let degrees_of_freedom = welch_satterthwaite_degrees_of_freedom(
        variance_of_mean_baseline / variance_of_difference,
        baseline.count,
        variance_of_mean_variation / variance_of_difference,
        variation.count,
    );
    let standard_error = variance_of_difference.sqrt();
    let margin =
        student_t_quantile(INTERVAL_95_QUANTILE_PROBABILITY, degrees_of_freedom) * standard_error;
    let p_value = p_value_two_sided(difference, standard_error, |t| {
        student_t_cdf(t, degrees_of_freedom)
    });

    comparison_relative(difference, margin, mean_baseline, p_value)
}

/// HyperLogLog standard error of an estimate at a given precision: estimate * 1.04 / sqrt(2^precision).
pub fn hll_standard_error(estimate: f64, precision: u8) -> f64 {
    let registers_count = 2.0_f64.powi(i32::from(precision));
    estimate * 1.04 / registers_count.sqrt()
}

/// The standard normal cumulative distribution function Φ(x).
///
/// Accuracy (measured against 40-digit mpmath): absolute error ≲ 4e-16 everywhere, relative
/// error ≲ 5e-15 for −37.5 ≤ x ≤ 0, so lower-tail probabilities keep their digits down to the
/// smallest normal double.
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() < NORMAL_SERIES_MAGNITUDE_MAX {
        return normal_cdf_series(x);
    }
    let tail = normal_tail_continued_fraction(x.abs());
    if x < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// The inverse of `normal_cdf`: the x with Φ(x) = p, for p in [0, 1] (±∞ at the ends).
/// Accurate to a few ulps of x.
pub fn normal_quantile(p: f64) -> f64 {
    debug_assert!(
        p.is_nan() || (0.0..=1.0).contains(&p),
        "probability must be in [0, 1]: {p}"
    );
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p > 0.5 {
        // 1 − p is exact for p in [0.5, 1], and the lower tail keeps relative precision.
        return -normal_quantile_lower(1.0 - p);
    }
    normal_quantile_lower(p)
}

/// The Student t cumulative distribution function with ν = degrees_of_freedom > 0 (ν = ∞ gives
/// the normal CDF). Absolute error ≲ 2e-15 for ν ≤ 1000 and ≲ 1e-13 above (measured against
/// 40-digit mpmath).
pub fn student_t_cdf(t: f64, degrees_of_freedom: f64) -> f64 {
    debug_assert!(
        degrees_of_freedom.is_nan() || degrees_of_freedom > 0.0,
        "degrees of freedom must be positive: {degrees_of_freedom}"
    );
    if t.is_nan() || degrees_of_freedom.is_nan() || degrees_of_freedom <= 0.0 {
        return f64::NAN;
    }
    let tail = student_t_tail(t.abs(), degrees_of_freedom);
    if t < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// The inverse of `student_t_cdf`: the t with F_ν(t) = p, for p in [0, 1] (±∞ at the ends).
pub fn student_t_quantile(p: f64, degrees_of_freedom: f64) -> f64 {
    debug_assert!(
        p.is_nan() || (0.0..=1.0).contains(&p),
        "probability must be in [0, 1]: {p}"
    );
    debug_assert!(
        degrees_of_freedom.is_nan() || degrees_of_freedom > 0.0,
        "degrees of freedom must be positive: {degrees_of_freedom}"
    );
    if !(0.0..=1.0).contains(&p) || degrees_of_freedom.is_nan() || degrees_of_freedom <= 0.0 {
        return f64::NAN;
    }
    if degrees_of_freedom == f64::INFINITY {
        return normal_quantile(p);
    }
    if p > 0.5 {
        // 1 − p is exact for p in [0.5, 1]; the distribution is symmetric.
        return student_t_tail_quantile(1.0 - p, degrees_of_freedom);
    }
    -student_t_tail_quantile(p, degrees_of_freedom)
}

/// Builds the comparison from an absolute difference and its interval half-width.
fn comparison_relative(
    difference: f64,
    margin: f64,
    baseline: f64,
    p_value: f64,
) -> Option<Comparison> {
    // Dividing by a negative baseline would swap the bounds.
    let bound_first = (difference - margin) / baseline;
    let bound_second = (difference + margin) / baseline;
    let comparison = Comparison {
        relative_improvement: difference / baseline,
        ci_low: bound_first.min(bound_second),
        ci_high: bound_first.max(bound_second),
        p_value,
    };
    let finite = comparison.relative_improvement.is_finite()
        && comparison.ci_low.is_finite()
        && comparison.ci_high.is_finite()
        && comparison.p_value.is_finite();
    finite.then_some(comparison)
}

/// Two-sided p-value of `difference / standard_error` under a symmetric distribution given by
/// its CDF; read from the lower tail, where the CDF keeps relative precision.
fn p_value_two_sided(difference: f64, standard_error: f64, cdf: impl Fn(f64) -> f64) -> f64 {
    if standard_error == 0.0 {
        return if difference == 0.0 { 1.0 } else { 0.0 };
    }
    let statistic = (difference / standard_error).abs();
    (2.0 * cdf(-statistic)).min(1.0)
}

/// Welch–Satterthwaite ν = V² / Σ (vᵢ² / (nᵢ − 1)) with V = Σ vᵢ, written with the shares vᵢ / V
/// so that tiny or huge variances cannot underflow or overflow when squared.
fn welch_satterthwaite_degrees_of_freedom(
    share_baseline: f64,
    count_baseline: f64,
    share_variation: f64,
    count_variation: f64,
) -> f64 {
    debug_assert!(count_baseline >= 2.0 && count_variation >= 2.0);
    let denominator = share_baseline * share_baseline / (count_baseline - 1.0)
        + share_variation * share_variation / (count_variation - 1.0);
    1.0 / denominator
}

fn normal_density(x: f64) -> f64 {
    let magnitude = x.abs();
    if magnitude > NORMAL_DENSITY_MAGNITUDE_MAX {
        return 0.0;
    }
    // Rounding x² costs up to x²·ε in the exponent (1e-13 at x = 30). Split x = high + low with
    // high a multiple of 1/16, so that high² is exact and x² = high² + low·(x + high).
    let high = (magnitude * 16.0).trunc() / 16.0;
    let low = magnitude - high;
    (-0.5 * high * high).exp() * (-0.5 * low * (magnitude + high)).exp() / (2.0 * PI).sqrt()
}

/// Φ(x) = 1/2 + φ(x) · (x + x³/3 + x⁵/(3·5) + …): every term has the sign of x, so nothing
/// cancels inside the sum.
fn normal_cdf_series(x: f64) -> f64 {
    let x_squared = x * x;
    let mut term = x;
    let mut sum = x;
    for index in 1..=NORMAL_SERIES_TERMS_MAX {
        term *= x_squared / f64::from(2 * index + 1);
        sum += term;
        if term.abs() <= f64::EPSILON * 0.5 * sum.abs() {
            break;
        }
    }
    0.5 + normal_density(x) * sum
}

/// Q(z) = 1 − Φ(z) for z ≥ 1.5, by the Laplace continued fraction of the Mills ratio
/// Q(z)/φ(z) = 1/(z + 1/(z + 2/(z + 3/(z + …)))), evaluated from a fixed depth upwards
/// (backward evaluation is stable).
fn normal_tail_continued_fraction(z: f64) -> f64 {
    debug_assert!(z >= NORMAL_SERIES_MAGNITUDE_MAX);
    let mut denominator = z;
    for index in (1..=NORMAL_CONTINUED_FRACTION_TERMS).rev() {
        denominator = z + f64::from(index) / denominator;
    }
    normal_density(z) / denominator
}

/// The normal quantile for a lower-tail probability q in [0, 1/2]: a value ≤ 0.
fn normal_quantile_lower(probability: f64) -> f64 {
    debug_assert!((0.0..=0.5).contains(&probability));
    if probability == 0.0 {
        return f64::NEG_INFINITY;
    }
    if probability == 0.5 {
        return 0.0;
    }
    let probability_log = probability.ln();
    // From Φ(x) ≈ φ(x)/|x| in the tail: x² ≈ t² − ln t² − ln 2π with t² = −2 ln q.
    let tail_squared = -2.0 * probability_log;
    let start = -(tail_squared - tail_squared.ln() - (2.0 * PI).ln())
        .max(0.0)
        .sqrt();
    // Newton on ln Φ rather than Φ: ln Φ is concave and its slope φ/Φ ≈ |x| never vanishes in
    // the tail, so steps stay well sized where Φ itself is flat.
    solve_increasing(NORMAL_QUANTILE_MIN, 0.0, start, |x| {
        let cdf = normal_cdf(x);
        (cdf.ln() - probability_log, normal_density(x) / cdf)
    })
}

/// P(T > magnitude) for the Student t distribution with ν degrees of freedom.
fn student_t_tail(magnitude: f64, degrees_of_freedom: f64) -> f64 {
    debug_assert!(magnitude >= 0.0 && degrees_of_freedom > 0.0);
    if magnitude == f64::INFINITY {
        return 0.0;
    }
    if degrees_of_freedom > STUDENT_T_NORMAL_DEGREES_OF_FREEDOM {
        return student_t_tail_large_degrees_of_freedom(magnitude, degrees_of_freedom);
    }
    // x = ν/(ν + t²) and y = 1 − x = t²/(ν + t²), each computed directly (not as 1 − the
    // other) and without forming t² when it could overflow. Their logarithms come from ln_1p:
    // ln x is multiplied by ν/2, so even its rounding would cost ν·ε of relative precision.
    let point = if magnitude <= degrees_of_freedom.sqrt() {
        let ratio = magnitude * magnitude / degrees_of_freedom;
        BetaPoint {
            x: 1.0 / (1.0 + ratio),
            y: ratio / (1.0 + ratio),
            x_log: -ratio.ln_1p(),
            y_log: ratio.ln() - ratio.ln_1p(),
        }
    } else {
        let ratio = degrees_of_freedom / magnitude / magnitude;
        BetaPoint {
            x: ratio / (1.0 + ratio),
            y: 1.0 / (1.0 + ratio),
            x_log: ratio.ln() - ratio.ln_1p(),
            y_log: -ratio.ln_1p(),
        }
    };
    0.5 * incomplete_beta_regularized(0.5 * degrees_of_freedom, 0.5, point)
}

/// The expansion of the t CDF in powers of 1/ν (from the density's expansion
/// (1 + t²/ν)^(−(ν+1)/2) = e^(−t²/2) (1 − (t² − t⁴/2)/(2ν) + …), integrated term by term):
/// F_ν(t) = Φ(t) − φ(t) [(t³ + t)/(4ν) + (3t⁷ − 7t⁵ − 5t³ − 3t)/(96ν²)] + O(ν⁻³),
/// read in the lower tail (t = −magnitude). Both terms are checked against 40-digit references
/// in the tests.
fn student_t_tail_large_degrees_of_freedom(magnitude: f64, degrees_of_freedom: f64) -> f64 {
    let density = normal_density(magnitude);
    let tail = normal_cdf(-magnitude);
    if density == 0.0 {
        return tail; // The correction would be 0 · ∞ for huge magnitudes.
    }
    let square = magnitude * magnitude;
    let first = magnitude * (square + 1.0) / 4.0;
    let second = magnitude * (((3.0 * square - 7.0) * square - 5.0) * square - 3.0) / 96.0;
    tail + density * (first + second / degrees_of_freedom) / degrees_of_freedom
}

/// ln f_ν(t) for the density f_ν(t) = (1 + t²/ν)^(−(ν+1)/2) / (√ν · B(ν/2, 1/2)).
fn student_t_density_log(t: f64, degrees_of_freedom: f64) -> f64 {
    let ratio = (t / degrees_of_freedom.sqrt()).powi(2);
    -0.5 * (degrees_of_freedom + 1.0) * ratio.ln_1p()
        - 0.5 * degrees_of_freedom.ln()
        - beta_log(0.5 * degrees_of_freedom, 0.5)
}

/// The magnitude m ≥ 0 with P(T > m) = q, for q in [0, 1/2].
fn student_t_tail_quantile(probability: f64, degrees_of_freedom: f64) -> f64 {
    debug_assert!((0.0..=0.5).contains(&probability));
    if probability == 0.0 {
        return f64::INFINITY;
    }
    if probability == 0.5 {
        return 0.0;
    }
    // The t distribution has heavier tails than the normal, so its quantile is at least the
    // normal one: a lower bound, and with the Cornish–Fisher term a good start.
    let normal = -normal_quantile_lower(probability);
    let start = normal + (normal * normal * normal + normal) / (4.0 * degrees_of_freedom);
    let probability_log = probability.ln();
    // Solve for u = ln m: power-law tails (small ν) become nearly linear in u, so Newton
    // converges in a few steps even where m is in the millions.
    let magnitude_log = solve_increasing(normal.ln(), f64::INFINITY, start.ln(), |u| {
        let magnitude = u.exp();
        let tail_log = student_t_tail(magnitude, degrees_of_freedom).ln();
        let slope = (student_t_density_log(magnitude, degrees_of_freedom) + u - tail_log).exp();
        (probability_log - tail_log, slope)
    });
    magnitude_log.exp()
}

/// An argument x of the incomplete beta function together with y = 1 − x and both logarithms,
/// so that callers can supply whichever they know without cancellation.
#[derive(Debug, Clone, Copy)]
struct BetaPoint {
    x: f64,
    y: f64,
    x_log: f64,
    y_log: f64,
}

impl BetaPoint {
    fn reflected(self) -> BetaPoint {
        BetaPoint {
            x: self.y,
            y: self.x,
            x_log: self.y_log,
            y_log: self.x_log,
        }
    }
}

/// The regularized incomplete beta function I_x(a, b).
fn incomplete_beta_regularized(a: f64, b: f64, point: BetaPoint) -> f64 {
    debug_assert!(a > 0.0 && b > 0.0);
    debug_assert!((0.0..=1.0).contains(&point.x) && (0.0..=1.0).contains(&point.y));
    if point.x == 0.0 {
        return 0.0;
    }
    if point.y == 0.0 {
        return 1.0;
    }
    // The continued fraction converges fast only below about the mean a/(a + b); above it,
    // use the reflection I_x(a, b) = 1 − I_y(b, a).
    if point.x < (a + 1.0) / (a + b + 2.0) {
        incomplete_beta_prefix(a, b, point) * incomplete_beta_fraction(a, b, point.x) / a
    } else {
        let reflected = point.reflected();
        1.0 - incomplete_beta_prefix(b, a, reflected) * incomplete_beta_fraction(b, a, reflected.x)
            / b
    }
}

/// x^a · y^b / B(a, b), computed in logarithms so that neither factor underflows alone.
fn incomplete_beta_prefix(a: f64, b: f64, point: BetaPoint) -> f64 {
    (a * point.x_log + b * point.y_log - beta_log(a, b)).exp()
}

/// 1 / (1 + d₁/(1 + d₂/(1 + …))) with the coefficients of DLMF 8.17.22, evaluated forwards by the
/// modified Lentz method (which needs no depth chosen in advance).
fn incomplete_beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    // Stands in for zero so that a vanishing partial denominator cannot divide by zero.
    const TINY: f64 = 1e-300;
    let mut value = 1.0;
    // Ratios of successive numerators and (inverted) denominators of the convergents.
    let mut numerator_ratio = 1.0;
    let mut denominator_ratio = 0.0;
    for index in 1..=INCOMPLETE_BETA_TERMS_MAX {
        let coefficient = incomplete_beta_coefficient(a, b, x, index);
        denominator_ratio = 1.0 + coefficient * denominator_ratio;
        if denominator_ratio.abs() < TINY {
            denominator_ratio = TINY;
        }
        denominator_ratio = 1.0 / denominator_ratio;
        numerator_ratio = 1.0 + coefficient / numerator_ratio;
        if numerator_ratio.abs() < TINY {
            numerator_ratio = TINY;
        }
        let change = numerator_ratio * denominator_ratio;
        value *= change;
        if (change - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    1.0 / value
}

/// d₂ₘ = m(b − m)x / ((a + 2m − 1)(a + 2m)), d₂ₘ₊₁ = −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)).
fn incomplete_beta_coefficient(a: f64, b: f64, x: f64, index: u32) -> f64 {
    let m = f64::from(index / 2);
    if index.is_multiple_of(2) {
        m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
    } else {
        -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
    }
}

/// ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b).
fn beta_log(a: f64, b: f64) -> f64 {
    let (small, large) = if a < b { (a, b) } else { (b, a) };
    if large < STIRLING_ARGUMENT_MIN {
        return gamma_log(a) + gamma_log(b) - gamma_log(a + b);
    }
    // ln Γ(large) − ln Γ(large + small) from the Stirling form, with the two huge
    // (z − 1/2) ln z terms cancelled algebraically rather than numerically:
    // −s ln L − (L + s − 1/2) ln(1 + s/L) + s + δ(L) − δ(L + s).
    let difference = -small * large.ln() - (large + small - 0.5) * (small / large).ln_1p()
        + small
        + stirling_remainder(large)
        - stirling_remainder(large + small);
    gamma_log(small) + difference
}

/// ln Γ(z) for z > 0.
fn gamma_log(z: f64) -> f64 {
    debug_assert!(z > 0.0 && z.is_finite());
    // Shift into the range where the Stirling series is exact: Γ(z) = Γ(z + n) / (z(z+1)…(z+n−1)).
    let mut shifted = z;
    let mut product = 1.0;
    while shifted < STIRLING_ARGUMENT_MIN {
        product *= shifted;
        shifted += 1.0;
    }
    let stirling = (shifted - 0.5) * shifted.ln() - shifted
        + 0.5 * (2.0 * PI).ln()
        + stirling_remainder(shifted);
    stirling - product.ln()
}

/// δ(z) = ln Γ(z) − ((z − 1/2) ln z − z + ln(2π)/2) = Σ B₂ₖ / (2k(2k − 1) z^(2k−1)) for z ≥ 10.
fn stirling_remainder(z: f64) -> f64 {
    debug_assert!(z >= STIRLING_ARGUMENT_MIN);
    // B₂ₖ / (2k(2k − 1)) for k = 1..8, from B₂ = 1/6 … B₁₆ = −3617/510.
    const COEFFICIENTS: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let inverse_squared = 1.0 / (z * z);
    let series = COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |sum, coefficient| sum * inverse_squared + coefficient);
    series / z
}

/// Finds where an increasing `residual` crosses zero inside [lower, upper] (either bound may be
/// infinite). `evaluate` returns the residual and its slope. Newton steps are taken while they
/// stay inside the shrinking bracket; otherwise the bracket is bisected (or, if unbounded,
/// widened), so a poor start or a NaN slope still converges.
fn solve_increasing(
    mut lower: f64,
    mut upper: f64,
    start: f64,
    evaluate: impl Fn(f64) -> (f64, f64),
) -> f64 {
    debug_assert!(lower <= start && start <= upper);
    let mut x = start;
    for _ in 0..SOLVER_ITERATIONS_MAX {
        let (residual, slope) = evaluate(x);
        if residual == 0.0 {
            return x;
        }
        // A NaN residual comes from an underflowed tail, that is from overshooting upwards.
        if residual < 0.0 {
            lower = x;
        } else {
            upper = x;
        }
        let newton = x - residual / slope;
        let next = if newton > lower && newton < upper {
            newton
        } else if upper == f64::INFINITY {
            x + x.abs().max(1.0)
        } else if lower == f64::NEG_INFINITY {
            x - x.abs().max(1.0)
        } else {
            0.5 * (lower + upper)
        };
        if (next - x).abs() <= 4.0 * f64::EPSILON * x.abs().max(1.0) {
            return next;
        }
        x = next;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "actual {actual:e}, expected {expected:e}, tolerance {tolerance:e}"
        );
    }

    fn assert_close_relative(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            ((actual - expected) / expected).abs() <= tolerance,
            "actual {actual:e}, expected {expected:e}, relative tolerance {tolerance:e}"
        );
    }

    // Reference values below were computed with mpmath at 40 significant digits
    // (ncdf, betainc, erfinv, findroot) and agree with published tables where those exist.

    #[test]
    fn normal_cdf_matches_reference_values() {
        assert_close(normal_cdf(1.96), 0.975_002_104_851_779_6, 1e-15);
        assert_close(normal_cdf(1.0), 0.841_344_746_068_542_9, 1e-15);
        assert_close(normal_cdf(2.0), 0.977_249_868_051_820_8, 1e-15);
        assert_close(normal_cdf(0.5), 0.691_462_461_274_013_1, 1e-15);
        assert_close(normal_cdf(-1.5), 0.066_807_201_268_858_07, 1e-15);
        assert_close(normal_cdf(3.0), 0.998_650_101_968_369_9, 1e-15);
        assert_close(normal_cdf(6.0), 0.999_999_999_013_412_4, 1e-15);
        assert_eq!(normal_cdf(0.0), 0.5);
    }

    #[test]
    fn normal_cdf_keeps_relative_precision_in_the_lower_tail() {
        assert_close_relative(normal_cdf(-3.0), 1.349_898_031_630_094_5e-3, 1e-13);
        assert_close_relative(normal_cdf(-2.999), 1.354_336_533_727_106_2e-3, 1e-13);
        assert_close_relative(normal_cdf(-5.0), 2.866_515_718_791_939e-7, 1e-13);
        assert_close_relative(normal_cdf(-8.0), 6.220_960_574_271_784e-16, 1e-13);
        assert_close_relative(normal_cdf(-10.0), 7.619_853_024_160_526e-24, 1e-13);
        assert_close_relative(normal_cdf(-20.0), 2.753_624_118_606_233_7e-89, 1e-12);
        assert_close_relative(normal_cdf(-37.0), 5.725_571_222_524_577e-300, 1e-12);
    }

    #[test]
    fn normal_cdf_is_continuous_where_the_method_changes() {
        let threshold = NORMAL_SERIES_MAGNITUDE_MAX;
        let below = normal_cdf(-threshold + 1e-12);
        let above = normal_cdf(-threshold - 1e-12);
        // Φ' = φ(1.5) ≈ 0.13, so the true change over 2e-12 is ~3e-13, relatively ~4e-12.
        assert!(below > above);
        assert_close_relative(below, above, 1e-10);
    }

    #[test]
    fn normal_cdf_is_symmetric_and_monotone() {
        let mut previous = 0.0;
        for step in -800..=800 {
            let x = f64::from(step) / 100.0;
            assert_close(normal_cdf(x) + normal_cdf(-x), 1.0, 2e-16);
            assert!(normal_cdf(x) >= previous, "not monotone at {x}");
            previous = normal_cdf(x);
        }
    }

    #[test]
    fn normal_cdf_handles_non_finite_inputs() {
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert!(normal_cdf(f64::NAN).is_nan());
    }

    #[test]
    fn normal_quantile_matches_reference_values() {
        assert_close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-14);
        assert_close(normal_quantile(0.025), -1.959_963_984_540_054, 1e-14);
        assert_close(normal_quantile(0.8), 0.841_621_233_572_914_4, 1e-14);
        assert_close(normal_quantile(1e-10), -6.361_340_902_404_056, 1e-13);
        assert_close(normal_quantile(1e-300), -37.047_096_299_361_2, 1e-12);
        assert_close(normal_quantile(0.999_999), 4.753_424_308_817_088, 1e-9);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
    }

    #[test]
    fn quantiles_propagate_not_a_number() {
        assert!(normal_quantile(f64::NAN).is_nan());
        assert!(student_t_quantile(f64::NAN, 3.0).is_nan());
        assert!(student_t_quantile(0.9, f64::NAN).is_nan());
    }

    #[test]
    fn normal_quantile_constant_matches_the_solver() {
        assert_close(NORMAL_QUANTILE_975, normal_quantile(0.975), 4e-15);
    }

    #[test]
    fn normal_quantile_inverts_normal_cdf() {
        for exponent in 1..=300 {
            let p = 10.0_f64.powi(-exponent);
            let x = normal_quantile(p);
            // d ln Φ / dx ≈ |x| in the tail, so a few ulps of x (≈ ε|x| each) move Φ
            // relatively by a few ε·x².
            let tolerance = 1e-14 + 16.0 * f64::EPSILON * x * x;
            assert_close_relative(normal_cdf(x), p, tolerance);
        }
        for step in 1..1000 {
            let p = f64::from(step) / 1000.0;
            assert_close(normal_cdf(normal_quantile(p)), p, 1e-15);
            assert_close(normal_quantile(p), -normal_quantile(1.0 - p), 1e-13);
        }
    }

    #[test]
    fn student_t_cdf_matches_reference_values() {
        assert_close(student_t_cdf(2.0, 5.0), 0.949_030_260_585_070_8, 1e-14);
        assert_close(student_t_cdf(1.0, 1.0), 0.75, 1e-14);
        assert_close(student_t_cdf(-2.5, 3.0), 0.043_853_323_504_032_77, 1e-14);
        assert_close(student_t_cdf(0.3, 30.0), 0.616_876_947_357_823_6, 1e-14);
        assert_close(student_t_cdf(3.0, 100.0), 0.998_296_042_328_335_3, 1e-14);
        assert_close(student_t_cdf(-1.0, 0.5), 0.301_121_610_841_322_1, 1e-14);
        assert_close(student_t_cdf(10.0, 2.0), 0.995_073_771_488_337_2, 1e-14);
        assert_close(student_t_cdf(0.5, 2.5), 0.671_151_040_065_142_7, 1e-14);
        assert_close(student_t_cdf(2.0, 1e4), 0.977_236_369_669_282_3, 1e-13);
        assert_close(student_t_cdf(2.0, 1e6), 0.977_249_733_074_340_4, 1e-13);
        assert_close_relative(student_t_cdf(-6.0, 7.0), 2.711_291_710_014_050_5e-4, 1e-12);
        assert_close_relative(student_t_cdf(-4.0, 1e5), 3.169_399_877_859_767e-5, 1e-10);
    }

    #[test]
    fn student_t_cdf_matches_closed_forms() {
        for step in -200..=200 {
            let t = f64::from(step) / 10.0;
            // ν = 1 is the Cauchy distribution; ν = 2 has an algebraic CDF.
            assert_close(student_t_cdf(t, 1.0), 0.5 + t.atan() / PI, 1e-14);
            let two = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert_close(student_t_cdf(t, 2.0), two, 1e-14);
        }
    }

    #[test]
    fn student_t_cdf_is_symmetric_and_monotone() {
        for degrees_of_freedom in [0.5, 1.0, 3.0, 17.5, 250.0, 1e5, 1e7] {
            let mut previous = 0.0;
            for step in -300..=300 {
                let t = f64::from(step) / 20.0;
                let cdf = student_t_cdf(t, degrees_of_freedom);
                assert_close(cdf + student_t_cdf(-t, degrees_of_freedom), 1.0, 1e-14);
                assert!(
                    cdf >= previous,
                    "not monotone at {t}, ν = {degrees_of_freedom}"
                );
                previous = cdf;
            }
        }
    }

    #[test]
    fn student_t_cdf_is_continuous_where_the_method_changes() {
        let threshold = STUDENT_T_NORMAL_DEGREES_OF_FREEDOM;
        for t in [-5.0, -2.0, -0.7, 0.4, 1.3, 3.0] {
            let exact = student_t_cdf(t, threshold);
            let approximate = student_t_cdf(t, threshold * (1.0 + 1e-12));
            assert_close(exact, approximate, 1e-12);
        }
    }

    #[test]
    fn student_t_converges_to_normal_for_large_degrees_of_freedom() {
        for step in -50..=50 {
            let t = f64::from(step) / 10.0;
            assert_close(student_t_cdf(t, 1e9), normal_cdf(t), 1e-9);
            assert_close(student_t_cdf(t, f64::INFINITY), normal_cdf(t), 1e-15);
            // At ν = 1000 the t distribution is still measurably heavier-tailed:
            // the gap is φ(t)(t³ + t)/4000 ≥ 3e-5 for 0.5 ≤ |t| ≤ 3.
            let gap = (student_t_cdf(t, 1e3) - normal_cdf(t)).abs();
            assert!(
                !(0.5..=3.0).contains(&t.abs()) || gap > 1e-5,
                "gap {gap} at {t}"
            );
        }
        assert_close(student_t_quantile(0.975, 1e9), 1.959_963_984_540_054, 1e-8);
        assert_close(
            student_t_quantile(0.975, 1e6),
            1.959_966_356_814_106_7,
            1e-12,
        );
        assert_close(
            student_t_quantile(0.975, f64::INFINITY),
            NORMAL_QUANTILE_975,
            1e-15,
        );
    }

    #[test]
    fn student_t_cdf_handles_non_finite_inputs() {
        assert_eq!(student_t_cdf(f64::INFINITY, 3.0), 1.0);
        assert_eq!(student_t_cdf(f64::NEG_INFINITY, 3.0), 0.0);
        assert_eq!(student_t_cdf(1e300, 3.0), 1.0);
        assert!(student_t_cdf(f64::NAN, 3.0).is_nan());
        assert!(student_t_cdf(1.0, f64::NAN).is_nan());
    }

    #[test]
    fn student_t_quantile_matches_reference_values() {
        assert_close(
            student_t_quantile(0.975, 10.0),
            2.228_138_851_986_274,
            1e-12,
        );
        assert_close(
            student_t_quantile(0.975, 1.0),
            12.706_204_736_174_694,
            1e-11,
        );
        assert_close(student_t_quantile(0.975, 2.0), 4.302_652_729_749_462, 1e-12);
        assert_close(student_t_quantile(0.995, 5.0), 4.032_142_983_555_227, 1e-12);
        assert_close(student_t_quantile(0.9, 3.0), 1.637_744_353_696_210_3, 1e-12);
        assert_close(student_t_quantile(0.999, 1.5), 52.184_430_008_992_62, 1e-9);
        assert_close(
            student_t_quantile(0.75, 4.0),
            0.740_697_084_112_682_6,
            1e-12,
        );
        assert_close(
            student_t_quantile(0.025, 10.0),
            -2.228_138_851_986_274,
            1e-12,
        );
        assert_eq!(student_t_quantile(0.5, 7.0), 0.0);
        assert_eq!(student_t_quantile(0.0, 7.0), f64::NEG_INFINITY);
        assert_eq!(student_t_quantile(1.0, 7.0), f64::INFINITY);
    }

    #[test]
    fn student_t_quantile_matches_the_cauchy_closed_form_deep_in_the_tail() {
        for p in [1e-12, 1e-6, 0.01, 0.3] {
            // tan(π(p − 1/2)) = −1/tan(πp), without rounding p − 1/2.
            let expected = -1.0 / (PI * p).tan();
            assert_close_relative(student_t_quantile(p, 1.0), expected, 1e-10);
        }
    }

    #[test]
    fn student_t_quantile_inverts_student_t_cdf() {
        for degrees_of_freedom in [0.7, 1.0, 2.5, 9.0, 19.190_545_987_541_22, 400.0, 2e6] {
            for p in [1e-9, 1e-4, 0.01, 0.1, 0.37, 0.5, 0.6, 0.9, 0.975, 0.999] {
                let t = student_t_quantile(p, degrees_of_freedom);
                let recovered = student_t_cdf(t, degrees_of_freedom);
                assert_close_relative(recovered, p, 1e-10);
                // 1 − p itself is rounded (relatively by up to 1e-7 for p = 1e-9).
                let mirrored = student_t_quantile(1.0 - p, degrees_of_freedom);
                assert_close(mirrored, -t, 1e-7 * t.abs().max(1.0));
            }
        }
    }

    #[test]
    fn student_t_quantile_decreases_towards_normal_with_degrees_of_freedom() {
        let mut previous = f64::INFINITY;
        for degrees_of_freedom in [1.0, 2.0, 5.0, 30.0, 1e3, 1e5, 1e8] {
            let quantile = student_t_quantile(0.975, degrees_of_freedom);
            assert!(quantile < previous && quantile > NORMAL_QUANTILE_975);
            previous = quantile;
        }
    }

    #[test]
    fn gamma_log_matches_factorials_and_half_integers() {
        let mut factorial: f64 = 1.0;
        for n in 1..=30 {
            // Γ(n) = (n − 1)!
            assert_close_relative(gamma_log(f64::from(n)).exp(), factorial, 1e-13);
            factorial *= f64::from(n);
        }
        assert_close(gamma_log(0.5), 0.5 * PI.ln(), 4e-15);
        // The Stirling sum at z + n ≈ 10 (≈ 13) minus ln(z(z+1)…) leaves a few ulps of 13.
        assert_close(gamma_log(1.0), 0.0, 4e-15);
        assert_close(gamma_log(2.0), 0.0, 4e-15);
    }

    #[test]
    fn beta_log_stirling_branch_matches_direct_sum() {
        for a in [10.0, 12.5, 40.0, 333.3] {
            for b in [0.5, 3.0, 11.0] {
                let direct = gamma_log(a) + gamma_log(b) - gamma_log(a + b);
                assert_close(beta_log(a, b), direct, 1e-12);
                assert_close(beta_log(a, b), beta_log(b, a), 0.0);
            }
        }
    }

    #[test]
    fn compare_rates_matches_hand_computation() {
        // Baseline 100/1000 = 0.10, variation 120/1000 = 0.12, difference 0.02.
        // Relative improvement 0.02 / 0.10 = 0.2.
        // Unpooled SE = √(0.1·0.9/1000 + 0.12·0.88/1000) = √0.0001956 = 0.01398570699;
        // CI = (0.02 ∓ 1.959963985 · 0.01398570699) / 0.1 = (−0.0741148200, 0.4741148200).
        // Pooled rate 220/2000 = 0.11, SE = √(0.11·0.89·(2/1000)) = √0.0001958 = 0.01399285532,
        // z = 0.02 / 0.01399285532 = 1.429300850, p = 2·Φ(−1.429300850) = 0.1529177819.
        let comparison = compare_rates(100, 1000, 120, 1000).unwrap();
        assert_close(comparison.relative_improvement, 0.2, 1e-12);
        assert_close(comparison.ci_low, -0.074_114_819_980_199_36, 1e-12);
        assert_close(comparison.ci_high, 0.474_114_819_980_199_4, 1e-12);
        assert_close(comparison.p_value, 0.152_917_781_863_945_97, 1e-12);
    }

    #[test]
    fn compare_rates_of_identical_groups_shows_no_effect() {
        let comparison = compare_rates(37, 500, 37, 500).unwrap();
        assert_eq!(comparison.relative_improvement, 0.0);
        assert_eq!(comparison.p_value, 1.0);
        assert_close(comparison.ci_low, -comparison.ci_high, 1e-15);
        assert!(comparison.ci_high > 0.0);
    }

    #[test]
    fn compare_rates_handles_degenerate_rates() {
        // Everyone converted in both groups: no variance at all.
        let comparison = compare_rates(10, 10, 20, 20).unwrap();
        assert_eq!(comparison.p_value, 1.0);
        assert_eq!((comparison.ci_low, comparison.ci_high), (0.0, 0.0));
        // A variation with no conversions is a −100% change.
        let comparison = compare_rates(50, 100, 0, 100).unwrap();
        assert_eq!(comparison.relative_improvement, -1.0);
        assert!(comparison.p_value < 1e-10);
    }

    #[test]
    fn compare_rates_rejects_impossible_inputs() {
        assert_eq!(compare_rates(0, 100, 10, 100), None);
        assert_eq!(compare_rates(10, 0, 10, 100), None);
        assert_eq!(compare_rates(10, 100, 10, 0), None);
        assert_eq!(compare_rates(-1, 100, 10, 100), None);
        assert_eq!(compare_rates(10, 100, -1, 100), None);
        assert_eq!(compare_rates(101, 100, 10, 100), None);
        assert_eq!(compare_rates(10, 100, 101, 100), None);
        assert_eq!(compare_rates(10, -100, 10, 100), None);
        assert!(compare_rates(i64::MAX / 2, i64::MAX, 1, 3).is_some());
    }

    fn sample_from(values: &[f64]) -> Sample {
        Sample {
            count: values.len() as f64,
            sum: values.iter().sum(),
            sum_squares: values.iter().map(|value| value * value).sum(),
        }
    }

    #[test]
    fn sample_mean_and_variance() {
        let sample = sample_from(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(sample.mean(), 5.0);
        assert_close(sample.variance(), 32.0 / 7.0, 1e-15);
        assert_eq!(sample_from(&[3.0]).variance(), 0.0);
        assert_eq!(sample_from(&[]).mean(), 0.0);
        assert_eq!(sample_from(&[]).variance(), 0.0);
        // Three equal values 1 whose sum of squares lost a little to rounding.
        let rounded_below_zero = Sample {
            count: 3.0,
            sum: 3.0,
            sum_squares: 3.0 - 1e-12,
        };
        assert_eq!(rounded_below_zero.variance(), 0.0);
        let infinite = Sample {
            count: 3.0,
            sum: f64::INFINITY,
            sum_squares: f64::INFINITY,
        };
        assert_eq!(infinite.variance(), 0.0);
    }

    /// A sample of `count` values with the given mean and unbiased variance.
    fn sample_with(count: f64, mean: f64, variance: f64) -> Sample {
        Sample {
            count,
            sum: count * mean,
            sum_squares: variance * (count - 1.0) + count * mean * mean,
        }
    }

    #[test]
    fn compare_means_matches_hand_computation() {
        // Baseline n = 10, mean 5, variance 4; variation n = 12, mean 6, variance 9.
        // V = 4/10 + 9/12 = 1.15, SE = √1.15 = 1.072380529; t = 1/1.072380529 = 0.9325048082.
        // ν = 1.15² / (0.4²/9 + 0.75²/11) = 1.3225 / 0.06891414141 = 19.19054599.
        // t₀.₉₇₅(19.19054599) = 2.091618361, margin = 2.243025805;
        // CI = (1 ∓ 2.243025805) / 5 = (−0.2486051610, 0.6486051610); p = 0.3626603718.
        let comparison =
            compare_means(sample_with(10.0, 5.0, 4.0), sample_with(12.0, 6.0, 9.0)).unwrap();
        assert_close(comparison.relative_improvement, 0.2, 1e-12);
        assert_close(comparison.ci_low, -0.248_602_161_032_052_16, 1e-10);
        assert_close(comparison.ci_high, 0.648_602_161_032_052_2, 1e-10);
        assert_close(comparison.p_value, 0.362_660_371_770_203_9, 1e-10);
    }

    #[test]
    fn compare_means_is_symmetric_in_the_difference() {
        let baseline = sample_with(50.0, 10.0, 25.0);
        let up = compare_means(baseline, sample_with(40.0, 12.0, 16.0)).unwrap();
        let down = compare_means(baseline, sample_with(40.0, 8.0, 16.0)).unwrap();
        assert_close(up.relative_improvement, -down.relative_improvement, 1e-12);
        assert_close(up.ci_low, -down.ci_high, 1e-12);
        assert_close(up.p_value, down.p_value, 1e-12);
        assert!(up.ci_low < up.relative_improvement && up.relative_improvement < up.ci_high);
    }

    #[test]
    fn compare_means_without_variance_is_exact() {
        let same = compare_means(sample_with(5.0, 3.0, 0.0), sample_with(7.0, 3.0, 0.0)).unwrap();
        assert_eq!(same.p_value, 1.0);
        assert_eq!((same.ci_low, same.ci_high), (0.0, 0.0));
        let different =
            compare_means(sample_with(5.0, 2.0, 0.0), sample_with(7.0, 3.0, 0.0)).unwrap();
        assert_eq!(different.p_value, 0.0);
        assert_eq!(different.relative_improvement, 0.5);
        assert_eq!((different.ci_low, different.ci_high), (0.5, 0.5));
    }

    #[test]
    fn compare_means_with_one_variance_zero_uses_the_other_degrees_of_freedom() {
        // ν = n − 1 = 4 from the only varying group: margin = t₀.₉₇₅(4) · √(2/5).
        let comparison =
            compare_means(sample_with(8.0, 10.0, 0.0), sample_with(5.0, 11.0, 2.0)).unwrap();
        let margin = 2.776_445_105_197_799 * (2.0_f64 / 5.0).sqrt();
        assert_close(comparison.ci_high, (1.0 + margin) / 10.0, 1e-12);
    }

    #[test]
    fn compare_means_orders_the_interval_for_a_negative_baseline() {
        let comparison =
            compare_means(sample_with(20.0, -4.0, 9.0), sample_with(20.0, -3.0, 9.0)).unwrap();
        assert_close(comparison.relative_improvement, -0.25, 1e-12);
        assert!(comparison.ci_low < comparison.relative_improvement);
        assert!(comparison.relative_improvement < comparison.ci_high);
    }

    #[test]
    fn compare_means_rejects_degenerate_and_non_finite_inputs() {
        let normal = sample_with(10.0, 5.0, 4.0);
        assert_eq!(compare_means(sample_with(1.0, 5.0, 0.0), normal), None);
        assert_eq!(compare_means(normal, sample_with(1.0, 5.0, 0.0)), None);
        assert_eq!(compare_means(sample_with(10.0, 0.0, 4.0), normal), None);
        let not_a_number = Sample {
            count: 10.0,
            sum: f64::NAN,
            sum_squares: 100.0,
        };
        assert_eq!(compare_means(not_a_number, normal), None);
        assert_eq!(compare_means(normal, not_a_number), None);
        let infinite = Sample {
            count: f64::INFINITY,
            sum: 1.0,
            sum_squares: 1.0,
        };
        assert_eq!(compare_means(infinite, normal), None);
        // The largest finite variance still gives a finite comparison...
        let huge = Sample {
            count: 2.0,
            sum: 0.0,
            sum_squares: f64::MAX,
        };
        let comparison = compare_means(normal, huge).unwrap();
        assert!(comparison.ci_low < -1e150 && comparison.ci_high > 1e150);
        // ...but a relative change that overflows gives none.
        let tiny = sample_with(10.0, 1e-300, 1e-600);
        assert_eq!(compare_means(tiny, sample_with(10.0, 1e300, 4.0)), None);
    }

    #[test]
    fn hll_standard_error_matches_formula() {
        // 2^14 registers: √16384 = 128, so 1.04/128 = 0.8125%.
        assert_close(hll_standard_error(1_000_000.0, 14), 8125.0, 1e-9);
        assert_close(hll_standard_error(1000.0, 4), 260.0, 1e-12);
        assert_eq!(hll_standard_error(0.0, 14), 0.0);
    }
}

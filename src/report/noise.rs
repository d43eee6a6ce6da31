//! The privacy parameter ε and the noise it calls for: discrete Laplace,
//! drawn exactly with integer arithmetic and fair coins.
//!
//! A count has sensitivity 1, so noise of scale 1/ε makes it ε-differentially
//! private. Rather than a floating-point Laplace sample rounded to an integer
//! (whose low-order bits and rounding leak, Mironov 2012), the noise is a
//! draw from the discrete Laplace distribution on the integers,
//! `P(x) ∝ exp(-|x|/t)` with `t = 1/ε`, by Canonne, Kamath and Steinke, "The
//! Discrete Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1
//! and 2. ε is taken as the exact fraction its `f64` is (every finite `f64`
//! is an integer times a power of two), so `t` is a ratio of integers and
//! every step is an integer comparison against a uniform integer: no
//! logarithm, no rounding.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// The differential-privacy parameter ε of published counts, within
/// [`Epsilon::MIN`]..=[`Epsilon::MAX`]. Smaller is more private and noisier:
/// the noise's scale is 1/ε.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Epsilon(f64);

impl Epsilon {
    /// Below this the noise (scale 100) drowns any count a report holds, and
    /// the scale grows without bound: ε = 1e-300 once showed every count as
    /// 2⁶⁴ − 1.
    pub const MIN: f64 = 0.01;
    /// Above this the noise (scale 0.1) is 0 in all but about one draw in
    /// 11 000: no privacy worth the name.
    pub const MAX: f64 = 10.0;

    /// `None` unless `value` is within `MIN..=MAX`.
    pub fn new(value: f64) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&value)
            .then_some(Self(value))
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// The noise's scale for a count (sensitivity 1): 1/ε.
    pub fn scale(self) -> f64 {
        1.0 / self.0
    }

    /// ε as the exact fraction `(numerator, denominator)` its `f64` is.
    /// Within `MIN..=MAX` both fit: 0.01 is an odd integer over 2⁵⁹.
    fn ratio(self) -> (u64, u64) {
        let bits = self.0.to_bits();
        // A normal, positive f64: (2⁵² + fraction) × 2^(exponent − 1075).
        let mut mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
        let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1075;
        let zeros = mantissa.trailing_zeros();
        mantissa >>= zeros;
        exponent += i64::from(zeros);
        if exponent >= 0 {
            (mantissa << exponent, 1)
        } else {
            (mantissa, 1 << -exponent)
        }
    }
}

/// The message of an ε outside the range, for the CLI, the config and the API.
pub fn range_problem(value: &str) -> String {
    format!(
        "`{value}` is not within {} ≤ ε ≤ {}: ε is a number greater than 0 in that \
         range, e.g. 0.5 (smaller is more private and noisier)",
        Epsilon::MIN,
        Epsilon::MAX
    )
}

impl FromStr for Epsilon {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<f64>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| range_problem(s))
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One draw from the discrete Laplace distribution of scale 1/ε:
/// `P(x) = (1 − p)/(1 + p) · p^|x|` for every integer `x`, `p = exp(−ε)`.
/// Mean 0, variance `2p/(1 − p)²`.
pub fn discrete_laplace(epsilon: Epsilon, rng: &mut impl Rng) -> i64 {
    // Scale t/s = 1/ε = denominator/numerator.
    let (s, t) = epsilon.ratio();
    let (s, t) = (u128::from(s), u128::from(t));
    loop {
        // X = U + t·V is geometric on the integers with P(X = x) ∝ exp(−x/t):
        // U uniform below t, kept with probability exp(−U/t), and V the number
        // of exp(−1) successes before the first failure.
        let u = rng.gen_range(0..t);
        if !bernoulli_exp(u, t, rng) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(1, 1, rng) {
            v += 1;
        }
        // Y = ⌊X/s⌋ is geometric with P(Y = y) ∝ exp(−y·s/t).
        let y = (u + t * v) / s;
        let negative = rng.r#gen::<bool>();
        // −0 and +0 are one outcome: redraw one of them, or 0 is twice as likely.
        if negative && y == 0 {
            continue;
        }
        let y = i64::try_from(y).unwrap_or(i64::MAX);
        return if negative { -y } else { y };
    }
}

/// A count with noise added, clamped into `0..=u64::MAX`: a count is never
/// shown negative, and never wraps.
pub fn noisy_count(exact: u64, epsilon: Epsilon, rng: &mut impl Rng) -> u64 {
    exact.saturating_add_signed(discrete_laplace(epsilon, rng))
}

/// True with probability exp(−n/d) (CKS 2020, Algorithm 1), for n ≥ 0, d ≥ 1.
fn bernoulli_exp(n: u128, d: u128, rng: &mut impl Rng) -> bool {
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋)).
    let mut n = n;
    while n > d {
        if !bernoulli_exp_at_most_one(d, d, rng) {
            return false;
        }
        n -= d;
    }
    bernoulli_exp_at_most_one(n, d, rng)
}

/// True with probability exp(−γ), γ = n/d in [0, 1]: the first K with a
/// failed Bernoulli(γ/K) is odd with exactly that probability.
fn bernoulli_exp_at_most_one(n: u128, d: u128, rng: &mut impl Rng) -> bool {
    let mut k: u128 = 1;
    while rng.gen_range(0..d * k) < n {
        k += 1;
    }
    k % 2 == 1
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn epsilon_is_its_float_exactly() {
        for value in [Epsilon::MIN, 0.1, 0.25, 0.5, 1.0, 3.0, Epsilon::MAX] {
            let (num, den) = Epsilon::new(value).unwrap().ratio();
            assert_eq!(num as f64 / den as f64, value);
            assert!(num % 2 == 1 || den == 1, "{num}/{den} is not reduced");
        }
        assert_eq!(Epsilon::new(0.5).unwrap().ratio(), (1, 2));
        assert_eq!(Epsilon::new(10.0).unwrap().ratio(), (10, 1));
    }

    #[test]
    fn bernoulli_exp_has_its_probability() {
        let mut rng = StdRng::seed_from_u64(15);
        let n = 100_000;
        for (num, den) in [(0u128, 1u128), (1, 3), (1, 1), (5, 2)] {
            let hits = (0..n).filter(|_| bernoulli_exp(num, den, &mut rng)).count();
            let want = (-(num as f64) / den as f64).exp();
            let share = hits as f64 / n as f64;
            // Standard error below 0.0016; five times that.
            assert!(
                (share - want).abs() < 0.008,
                "{num}/{den}: {share} vs {want}"
            );
        }
    }
}

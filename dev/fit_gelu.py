"""Fit the rational function that autograd.py's float32 GELU uses, and measure its error.

autograd.py writes GELU(x) = x Phi(x) = max(x, 0) - |x| h with the tail
h = Phi(-|x|) = exp(-x^2 / 2) S(|x|). S(t) = exp(t^2 / 2) Phi(-t) is smooth and slowly
varying (S(0) = 1/2, S(t) ~ 1 / (t sqrt(2 pi)) far out), so a rational function
P(t) / Q(t) of low degree fits it: degrees 2 and 3 here, on 0 <= t <= 10.

The fit minimises the error that S causes in GELU and its slope, not in S itself: an error
dS changes GELU by about t exp(-t^2 / 2) |dS| and the slope by about exp(-t^2 / 2) |dS|,
so the weight is max(t, 1) exp(-t^2 / 2). Weighted linear least squares (Loeb's
iteration: divide by the previous Q) gives the start, then Lawson's reweighting moves it
toward the smallest maximum error. Q is then scaled to be monic, which saves a
multiplication in autograd.py.

Run: python dev/fit_gelu.py  (NumPy and the standard library only, about 9 s). It prints
the coefficients for autograd.py and the fit's own error. Then it prints the error of
autograd.py's float32 evaluation against math.erfc on [-10, 10].

python dev/fit_gelu.py --power-form fits and measures the exp-free form that was left out
(see power_form; BENCHMARKS.md has why).
"""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fit(numerator_degree: int = 2, denominator_degree: int = 3, iterations: int = 40):
    """Return (P, Q) coefficients, lowest power first, Q monic, and the fit's largest error."""
    t = np.concatenate([np.linspace(0, 3, 3000), np.linspace(3, 10, 3000)])
    target = np.array([math.erfc(v / math.sqrt(2)) / 2 * math.exp(v * v / 2) for v in t])
    sensitivity = np.maximum(t, 1.0) * np.exp(-t * t / 2)
    weights, q_values = sensitivity.copy(), np.ones_like(t)
    powers = np.stack([t ** i for i in range(max(numerator_degree, denominator_degree) + 1)],
                      axis=1)
    for _ in range(iterations):
        # Linear in the unknowns: P(t) - target * (Q(t) - 1) = target, with Q(0) = 1.
        design = np.concatenate([powers[:, :numerator_degree + 1],
                                 -target[:, None] * powers[:, 1:denominator_degree + 1]],
                                axis=1)
        scale = weights / q_values
        solution = np.linalg.lstsq(design * scale[:, None], target * scale, rcond=None)[0]
        p = solution[:numerator_degree + 1]
        q = np.concatenate([[1.0], solution[numerator_degree + 1:]])
        q_values = powers[:, :denominator_degree + 1] @ q
        fitted = powers[:, :numerator_degree + 1] @ p / q_values
        error = np.abs(fitted - target) * sensitivity
        weights = weights * np.sqrt(error / error.max()) + 1e-12
    return p / q[-1], q / q[-1], float(error.max())


def exact_gelu(x: np.ndarray) -> tuple:
    """Return GELU(x) and its slope in float64, with Phi(x) = erfc(-x / sqrt(2)) / 2.

    erfc keeps float64 precision in the left tail, where 1 + erf(x / sqrt(2)) cancels.
    """
    phi_cdf = np.array([math.erfc(-v / math.sqrt(2)) / 2 for v in x])
    density = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return x * phi_cdf, phi_cdf + x * density


def power_form(exponent: int = 32, degree: int = 5, iterations: int = 60) -> tuple:
    """Fit the exp-free tail h(t) = Phi(-t) ~ P(t)^-exponent, the alternative we left out.

    Its float32 evaluation needs no exp. It takes 20 passes: abs, clip, a Horner
    polynomial (2 passes per degree), log2(exponent) squarings, one division and two passes
    to finish. The form that autograd.py uses takes one exp (1.3 ns, about 13 cheap passes)
    and 18 other passes. P = h^(-1 / exponent) is fitted by weighted least squares with
    Lawson's reweighting, weighting the error by its effect on GELU.
    Returns (coefficients, lowest power first; largest GELU error on [-10, 10] in float32;
    relative error of GELU at x = -8).
    """
    t = np.concatenate([np.linspace(0, 3, 4000), np.linspace(3, 12, 4000)])
    tail = np.array([math.erfc(v / math.sqrt(2)) / 2 for v in t])
    target = tail ** (-1.0 / exponent)
    sensitivity = np.maximum(t, 1.0) * exponent * tail / target
    powers = np.stack([t ** i for i in range(degree + 1)], axis=1)
    weights = sensitivity.copy()
    for _ in range(iterations):
        c = np.linalg.lstsq(powers * weights[:, None], target * weights, rcond=None)[0]
        error = np.abs(powers @ c - target) * sensitivity
        weights = weights * np.sqrt(error / error.max()) + 1e-15

    def gelu32(x: np.ndarray) -> np.ndarray:
        z = np.minimum(np.abs(x), np.float32(12.0))
        p = np.full_like(z, np.float32(c[-1]))
        for coefficient in c[-2::-1]:
            p = p * z + np.float32(coefficient)
        for _ in range(int(math.log2(exponent))):
            p = p * p
        return np.maximum(x, np.float32(0)) - z / p

    x = (np.arange(-10 * 2 ** 12, 10 * 2 ** 12 + 1) / 2 ** 12).astype(np.float32)
    exact, _ = exact_gelu(x.astype(float))
    far = np.array([-8.0], dtype=np.float32)
    relative = abs(gelu32(far)[0] / exact_gelu(far.astype(float))[0][0] - 1)
    return c, float(np.abs(gelu32(x) - exact).max()), float(relative)


def main() -> int:
    if sys.argv[1:] == ["--power-form"]:
        c, error, relative = power_form()
        print("exp-free form Phi(-|x|) ~ P(|x|)^-32, P of degree 5:",
              tuple(float(v) for v in c))
        print(f"float32 GELU within {error:.1e} of the exact formula on [-10, 10] "
              f"(every 2^-12); relative error {relative:.1e} at x = -8")
        return 0
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if sys.argv[1:]:
        print("usage: python dev/fit_gelu.py [--power-form] (see --help)", file=sys.stderr)
        return 2
    p, q, fit_error = fit()
    print("_GELU_P =", tuple(float(c) for c in p))
    print("_GELU_Q =", tuple(float(c) for c in q))
    print(f"largest weighted error of the fit itself on [0, 10]: {fit_error:.1e}")
    import autograd

    # Every 2^-20 on [-10, 10] (21 million points), then the left tail down to -13.5,
    # where GELU is still a normal float32 number.
    x = np.arange(-10 * 2 ** 20, 10 * 2 ** 20 + 1, dtype=np.float64) / 2 ** 20
    x = x.astype(np.float32)
    exact, slope = exact_gelu(x.astype(float))
    value, derivative = autograd._gelu_float32(x, with_slope=True)
    tail = np.linspace(-13.5, -4, 200_001, dtype=np.float32)
    tail_exact, _ = exact_gelu(tail.astype(float))
    tail_value, _ = autograd._gelu_float32(tail, with_slope=False)
    relative = np.abs(tail_value - tail_exact) / np.abs(tail_exact)
    print(f"autograd.py in float32 on [-10, 10]: GELU within {np.abs(value - exact).max():.2e}, "
          f"slope within {np.abs(derivative - slope).max():.2e} of the exact formula; "
          f"relative error of GELU on [-13.5, -4] at most {relative.max():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

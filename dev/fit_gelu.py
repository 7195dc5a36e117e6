"""Fit the rational function that autograd.py's float32 GELU uses, and measure its error.

GELU(x) = x Phi(x) = x / (1 + exp(-g(x))), where g = log(Phi / (1 - Phi)) is the logit of
the normal CDF Phi. g is odd, so g(x) = x R(x^2) with R even and smooth; this script fits
R(u) ~ P(u) / Q(u) with P and Q of degree 3 on 0 <= x <= 10.

The fit minimises the error that R causes in GELU, not in g: an error dR changes GELU by
about x^2 Phi (1 - Phi) |dR|, which is tiny in both tails. Weighted linear least squares
(Loeb's iteration: divide by the previous Q) gives the start, then Lawson's reweighting moves
it toward the smallest maximum error. Q is then scaled to be monic, which saves a
multiplication in autograd.py.

Run: python dev/fit_gelu.py  (NumPy and the standard library only, about 10 s). It prints
the coefficients for autograd.py and the fit's own error. Then it prints the error of
autograd.py's float32 evaluation against math.erf on [-10, 10].
"""

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fit(degree: int = 3, iterations: int = 30):
    """Return (P, Q) coefficients, lowest power first, Q monic, and the fit's largest GELU error."""
    x = np.concatenate([np.linspace(1e-4, 3, 3000), np.linspace(3, 10, 3000)])
    tail = np.array([math.erfc(v / math.sqrt(2)) / 2 for v in x])  # 1 - Phi(x)
    target = (np.log1p(-tail) - np.log(tail)) / x  # R(x^2) = g(x) / x
    u = x * x
    sensitivity = u * (1 - tail) * tail  # |d GELU| per unit of |dR|
    weights, q_values = sensitivity.copy(), np.ones_like(u)
    powers = np.stack([u ** i for i in range(degree + 1)], axis=1)
    for _ in range(iterations):
        # Linear in the unknowns: P(u) - target * (Q(u) - 1) = target, with Q(0) = 1.
        design = np.concatenate([powers, -target[:, None] * powers[:, 1:]], axis=1)
        scale = weights / q_values
        solution = np.linalg.lstsq(design * scale[:, None], target * scale, rcond=None)[0]
        p = solution[:degree + 1]
        q = np.concatenate([[1.0], solution[degree + 1:]])
        q_values = powers @ q
        error = np.abs(powers @ p / q_values - target) * sensitivity
        weights = weights * np.sqrt(error / error.max()) + 1e-12
    return p / q[-1], q / q[-1], float(error.max())


def main() -> int:
    p, q, fit_error = fit()
    print("_GELU_P =", tuple(float(c) for c in p))
    print("_GELU_Q =", tuple(float(c) for c in q))
    print(f"largest GELU error of the fit itself on [0, 10]: {fit_error:.1e}")
    import autograd

    x = np.linspace(-10, 10, 400_001, dtype=np.float32)
    exact = np.array([v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in x.astype(float)])
    slope = np.array([(1 + math.erf(v / math.sqrt(2))) / 2
                      + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in x.astype(float)])
    value, derivative = autograd._gelu_float32(x, with_slope=True)
    print(f"autograd.py in float32 on [-10, 10]: GELU within {np.abs(value - exact).max():.1e}, "
          f"slope within {np.abs(derivative - slope).max():.1e} of math.erf's formula")
    return 0


if __name__ == "__main__":
    sys.exit(main())

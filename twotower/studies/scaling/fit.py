"""Saturating power laws L(x) = a · (x / x0)^(−b) + c, fitted in log space, with bootstrap intervals.

``fit_power_law(x, y)`` minimises Σ (log yᵢ − log(a·(xᵢ/x0)^(−b) + c))² with
``scipy.optimize.curve_fit`` (trust-region reflective, parameters log a, b, c) where x0 is the
geometric mean of x (so a is a loss, not a number like 10⁴⁰). Log space weighs every point by its
relative error, as the log-log plots show them. Bounds: b ∈ [0, 5] (a loss that falls), c ∈
[0, min y] (the irreducible loss is non-negative and below every observed loss), log a ∈ [−50, 50].
``offset=False`` fixes c = 0: a straight line on log-log axes. Several starts (c at 0, ½, 0.9 and
0.99 of min y, each with the line fitted to log(y − c)) guard against local minima.

Goodness of fit: R² in log space (1 − SS_res / SS_tot of log y), the RMSE of the log residuals
(≈ the typical relative error), and the residual of every point.

Intervals: residual bootstrap — the log residuals, inflated by √(n / (n − k)) for the k fitted
parameters, are resampled with replacement, added to the fitted curve and the law refitted;
percentile intervals of the refits. With few points (n close to k) the intervals are wide, which
is the honest answer.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from twotower.studies.points import json_safe

B_BOUNDS = (0.0, 5.0)
LOG_A_BOUNDS = (-50.0, 50.0)


@dataclass(frozen=True)
class PowerLawFit:
    """y ≈ a · (x / x0)^(−b) + c; ``*_ci`` = (lo, hi) bootstrap intervals (NaN when not run)."""

    a: float
    b: float
    c: float
    x0: float
    offset: bool
    r2: float
    rmse_log: float
    residuals: tuple[float, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    b_ci: tuple[float, float] = (math.nan, math.nan)
    a_ci: tuple[float, float] = (math.nan, math.nan)
    c_ci: tuple[float, float] = (math.nan, math.nan)
    confidence: float = math.nan
    bootstrap: int = 0
    bootstrap_failed: int = 0
    at_bounds: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def a_raw(self) -> float:
        """a in units of x itself: y = a_raw · x^(−b) + c."""
        return self.a * self.x0**self.b

    def predict(self, x) -> np.ndarray:
        return self.a * (np.asarray(x, dtype=np.float64) / self.x0) ** (-self.b) + self.c

    def formula(self, var: str = "x") -> str:
        law = f"{self.a:.4g}·({var}/{self.x0:.3g})^(−{self.b:.4g})"
        return f"{law} + {self.c:.4g}" if self.offset else law

    def to_dict(self) -> dict:
        """JSON-safe (NaN → None)."""
        return json_safe({"a": self.a, "b": self.b, "c": self.c, "x0": self.x0, "a_raw": self.a_raw, "offset": self.offset,
                "r2": self.r2, "rmse_log": self.rmse_log, "n": self.n, "residuals": list(self.residuals),
                "x": list(self.x), "y": list(self.y), "b_ci": list(self.b_ci), "a_ci": list(self.a_ci),
                "c_ci": list(self.c_ci), "confidence": self.confidence, "bootstrap": self.bootstrap,
                "bootstrap_failed": self.bootstrap_failed, "at_bounds": list(self.at_bounds),
                "formula": self.formula()})


def _model(offset: bool):
    """(f, jac): log-space model and its Jacobian in the parameters (log a, b[, c])."""
    if offset:
        def f(u, log_a, b, c):
            return np.log(np.exp(log_a) * u ** (-b) + c)

        def jac(u, log_a, b, c):
            power = np.exp(log_a) * u ** (-b)
            g = power + c
            return np.stack([power / g, -power * np.log(u) / g, 1.0 / g], axis=1)
    else:
        def f(u, log_a, b):
            return log_a - b * np.log(u)

        def jac(u, log_a, b):
            return np.stack([np.ones_like(u), -np.log(u)], axis=1)
    return f, jac


def _line(lu: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """Least-squares (log a, b) of ly = log a − b·lu."""
    slope, intercept = np.polyfit(lu, ly, 1) if np.ptp(lu) > 0 else (0.0, float(np.mean(ly)))
    return float(intercept), float(-slope)


def _solve(u, ly, offset: bool, c_max: float, starts) -> np.ndarray | None:
    f, jac = _model(offset)
    lower = [LOG_A_BOUNDS[0], B_BOUNDS[0]] + ([0.0] if offset else [])
    upper = [LOG_A_BOUNDS[1], B_BOUNDS[1]] + ([c_max] if offset else [])
    best, best_sse = None, math.inf
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=np.float64), lower, upper)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(f, u, ly, p0=p0, jac=jac, bounds=(lower, upper), method="trf",
                                      max_nfev=2_000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((ly - f(u, *params)) ** 2))
        if np.isfinite(sse) and sse < best_sse:
            best, best_sse = params, sse
    return best


def _starts(u, y, offset: bool, c_max: float):
    lu = np.log(u)
    if not offset:
        return [_line(lu, np.log(y))]
    starts = []
    for share in (0.0, 0.5, 0.9, 0.99):
        c = share * c_max
        log_a, b = _line(lu, np.log(np.maximum(y - c, 1e-12 * y)))
        starts.append((log_a, min(max(b, 1e-3), B_BOUNDS[1]), c))
    return starts


def fit_power_law(x, y, *, offset: bool = True, bootstrap: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> PowerLawFit:
    """Fit y ≈ a·(x/x0)^(−b) + c (``offset=False``: c = 0) to positive x, y (1-D, same length).

    Needs more points than parameters (4 with the offset, 3 without). Raises ``ValueError`` when
    the inputs are invalid or no start converges.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError(f"x and y must be finite and > 0 for a log-space fit; got x in "
                         f"[{np.nanmin(x) if x.size else 'n/a'}, {np.nanmax(x) if x.size else 'n/a'}], "
                         f"y in [{np.nanmin(y) if y.size else 'n/a'}, {np.nanmax(y) if y.size else 'n/a'}]")
    k = 3 if offset else 2
    if len(x) <= k:
        raise ValueError(f"a power law {'with' if offset else 'without'} offset has {k} parameters and needs at "
                         f"least {k + 1} points; got {len(x)}. Add points to the grid (more sizes / epochs)")
    if np.ptp(x) == 0:
        raise ValueError(f"all {len(x)} x values are equal ({x[0]:g}); the exponent is not identifiable")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")

    x0 = float(np.exp(np.mean(np.log(x))))
    u = x / x0
    ly = np.log(y)
    c_max = float(y.min())
    params = _solve(u, ly, offset, c_max, _starts(u, y, offset, c_max))
    if params is None:
        raise ValueError(f"the power-law fit did not converge on {len(x)} points from any start")
    f, _ = _model(offset)
    fitted = f(u, *params)
    residuals = ly - fitted
    ss_res = float(np.sum(residuals**2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan

    lower = [LOG_A_BOUNDS[0], B_BOUNDS[0]] + ([0.0] if offset else [])
    upper = [LOG_A_BOUNDS[1], B_BOUNDS[1]] + ([c_max] if offset else [])
    names = ["a", "b"] + (["c"] if offset else [])
    tol = 1e-6 * np.maximum(1.0, np.abs(upper))
    at_bounds = tuple(n for n, p, lo, hi, t in zip(names, params, lower, upper, tol)
                      if p - lo <= t or hi - p <= t)

    cis = {"a": (math.nan, math.nan), "b": (math.nan, math.nan), "c": (math.nan, math.nan)}
    failed = 0
    if bootstrap:
        rng = np.random.default_rng(seed)
        scaled = residuals * math.sqrt(len(x) / (len(x) - k))
        draws = []
        for _ in range(bootstrap):
            ly_star = fitted + rng.choice(scaled, size=len(x), replace=True)
            y_star = np.exp(ly_star)
            c_max_star = float(y_star.min())
            p = _solve(u, ly_star, offset, c_max_star, [params])
            if p is None:
                failed += 1
                continue
            draws.append(p)
        if draws:
            draws = np.asarray(draws)
            q = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
            lo_hi = np.percentile(draws, q, axis=0)
            cis["a"] = (float(np.exp(lo_hi[0, 0])), float(np.exp(lo_hi[1, 0])))
            cis["b"] = (float(lo_hi[0, 1]), float(lo_hi[1, 1]))
            if offset:
                cis["c"] = (float(lo_hi[0, 2]), float(lo_hi[1, 2]))

    return PowerLawFit(
        a=float(np.exp(params[0])), b=float(params[1]), c=float(params[2]) if offset else 0.0, x0=x0, offset=offset,
        r2=r2, rmse_log=math.sqrt(ss_res / len(x)), residuals=tuple(float(r) for r in residuals),
        x=tuple(float(v) for v in x), y=tuple(float(v) for v in y), b_ci=cis["b"], a_ci=cis["a"], c_ci=cis["c"],
        confidence=float(confidence) if bootstrap else math.nan, bootstrap=int(bootstrap), bootstrap_failed=failed,
        at_bounds=at_bounds,
    )


def pareto_frontier(x, y) -> np.ndarray:
    """bool mask of the compute-efficient points: a point is kept when its y is strictly below
    that of every point with x at most its own (ties in x: the lowest y)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of the same length, got shapes {x.shape} and {y.shape}")
    keep = np.zeros(len(x), dtype=bool)
    best = math.inf
    for i in np.lexsort((y, x)):
        if y[i] < best:
            keep[i] = True
            best = y[i]
    return keep

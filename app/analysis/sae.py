"""Small-area estimation (docs/methodology.md#small-area-estimation): poverty figures for areas too small for a
survey to estimate directly, borrowing strength from covariates known for every area or every household.

Two models, each with its own measure of uncertainty:

* **Fay–Herriot** (area level; Fay & Herriot 1979). Direct survey estimates ``y_d`` with known sampling variances
  ``psi_d``: ``y_d = x_d'beta + u_d + e_d``, ``u_d ~ N(0, s2u)``, ``e_d ~ N(0, psi_d)``. ``s2u`` by REML or ML with
  Fisher scoring; the EBLUP ``gamma_d y_d + (1 - gamma_d) x_d'beta``, ``gamma_d = s2u / (s2u + psi_d)``; MSE by
  Prasad & Rao (1990) with Datta & Lahiri's (2000) terms for REML and ML, or by the parametric bootstrap of
  González-Manteiga et al. (2008). Log and arcsine transformations with back-transformation; ratio or difference
  benchmarking to known totals.
* **Nested-error unit model with empirical best prediction** (Battese, Harter & Fuller 1988; Molina & Rao 2010):
  ``T(y_dj) = x_dj'beta + u_d + e_dj`` for a household's income ``y`` (``T``: none, log or Box-Cox), fitted on the
  survey sample by REML or ML; FGT(0, 1, 2) and mean income per area predicted for every household of the
  population (census or registry covariates), MSE by the parametric bootstrap of González-Manteiga et al. (2008).

Hand-written on numpy and scipy, not taken from a library, because (i) ``samplics`` 0.6 has no FH bootstrap,
transformation or benchmarking and its Box-Cox back-transformation is not the inverse of its forward one, and R's
``sae``/``emdi`` cannot run here; (ii) the EBP is computed *exactly*: given the data, each non-surveyed household's
transformed income is normal with mean ``x'beta + u_d`` and variance ``s2e + s2u (1 - gamma_d)``, so its expected
FGT contribution has a closed form (none, log) or a one-dimensional quadrature (Box-Cox). This is the limit of
Molina & Rao's Monte Carlo as its replicates grow, and it makes 2,000,000 households × 100 bootstrap replicates
feasible on two cores. The REML fits are checked against statsmodels' MixedLM and the published milk-expenditure
example (tests/test_sae.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

from app.analysis.spatial import AnalysisError

Method = Literal["REML", "ML"]


# ------------------------------------------------------------------------------------------------- Fay–Herriot
@dataclass(frozen=True)
class FHFit:
    """A fitted Fay–Herriot model (on the scale the model was fitted on)."""

    method: str
    beta: np.ndarray
    cov_beta: np.ndarray  # (X' V^-1 X)^-1
    sigma2_u: float
    var_sigma2_u: float  # asymptotic variance of the estimate: 2 / sum (s2u + psi)^-2
    loglik: float  # the (unrestricted) log-likelihood at the estimates
    iterations: int
    converged: bool


def fit_fay_herriot(y: np.ndarray, X: np.ndarray, psi: np.ndarray, method: Method = "REML", tol: float = 1e-10,
                    max_iter: int = 200) -> FHFit:
    """Fit the Fay–Herriot model by Fisher scoring (Rao & Molina 2015, §6.1.2), truncating s2u at 0.

    >>> import numpy as np
    >>> X = np.column_stack([np.ones(4), [0.0, 1.0, 2.0, 3.0]])
    >>> f = fit_fay_herriot(np.array([1.0, 2.1, 2.9, 4.2]), X, np.full(4, 0.01))
    >>> round(float(f.beta[1]), 6)
    1.04
    """
    y, X, psi = np.asarray(y, float), np.asarray(X, float), np.asarray(psi, float)
    m, p = X.shape
    if m <= p:
        raise AnalysisError(f"Fay–Herriot: {m} areas with a direct estimate cannot fit {p} coefficients; give more "
                            "areas or fewer covariates.")
    if np.any(psi <= 0) or not np.all(np.isfinite(psi)):
        raise AnalysisError("Fay–Herriot: every sampling variance must be a positive number.")
    if np.linalg.matrix_rank(X) < p:
        raise AnalysisError("Fay–Herriot: the covariates are collinear (or one is constant); drop one.")
    # start: the moment estimator of Prasad & Rao (1990), kept away from 0 so the scoring can move
    beta_ols, *_ = np.linalg.lstsq(X, y, rcond=None)
    h = np.einsum("ij,ji->i", X, np.linalg.pinv(X))
    s2 = max((float(((y - X @ beta_ols) ** 2).sum()) - float((psi * (1 - h)).sum())) / (m - p), 0.0)
    s2 = max(s2, 0.01 * float(np.median(psi)))
    scale = float(np.mean(psi))
    converged, it = False, 0
    while it < max_iter:
        it += 1
        w = 1.0 / (s2 + psi)
        A = X.T @ (X * w[:, None])
        Ainv = np.linalg.inv(A)
        beta = Ainv @ (X.T @ (w * y))
        r = y - X @ beta
        if method == "REML":
            B = X.T @ (X * (w ** 2)[:, None])
            AB = Ainv @ B
            tr_p = w.sum() - np.trace(AB)
            tr_p2 = (w ** 2).sum() - 2 * np.trace(Ainv @ (X.T @ (X * (w ** 3)[:, None]))) + np.trace(AB @ AB)
            score = -0.5 * tr_p + 0.5 * float(((w * r) ** 2).sum())
            info = 0.5 * tr_p2
        else:
            score = -0.5 * w.sum() + 0.5 * float(((w * r) ** 2).sum())
            info = 0.5 * (w ** 2).sum()
        new = max(s2 + score / info, 0.0)
        done = abs(new - s2) <= tol * max(scale, 1e-300)
        s2 = new
        if done:
            converged = True
            break
    w = 1.0 / (s2 + psi)
    Ainv = np.linalg.inv(X.T @ (X * w[:, None]))
    beta = Ainv @ (X.T @ (w * y))
    r = y - X @ beta
    ll = -0.5 * (m * np.log(2 * np.pi) + np.log(s2 + psi).sum() + float((w * r * r).sum()))
    if not (np.isfinite(s2) and np.all(np.isfinite(beta)) and np.isfinite(ll)):
        raise AnalysisError("Fay–Herriot: the fit did not give finite estimates (values of extreme size?).")
    return FHFit(method, beta, Ainv, float(s2), float(2.0 / (w ** 2).sum()), float(ll), it, converged)


@dataclass(frozen=True)
class FHPrediction:
    """EBLUP per area (model scale) with the Prasad–Rao terms; areas without a direct estimate get x'beta."""

    estimate: np.ndarray
    gamma: np.ndarray  # 0 where there is no direct estimate
    g1: np.ndarray
    g2: np.ndarray
    g3: np.ndarray
    mse: np.ndarray  # Prasad–Rao (REML: g1 + g2 + 2 g3; ML: with Datta & Lahiri's bias term)


def predict_fay_herriot(fit: FHFit, y: np.ndarray, X: np.ndarray, psi: np.ndarray) -> FHPrediction:
    """EBLUP and its analytic MSE for every area; ``y`` and ``psi`` are NaN where an area has no direct estimate
    (its prediction is synthetic: MSE ``s2u + x' cov_beta x``, Rao & Molina 2015, §6.2.3)."""
    y, X, psi = np.asarray(y, float), np.asarray(X, float), np.asarray(psi, float)
    s2 = fit.sigma2_u
    inside = np.isfinite(y) & np.isfinite(psi)
    synth = X @ fit.beta
    gamma = np.zeros(len(y))
    gamma[inside] = s2 / (s2 + psi[inside]) if s2 > 0 else 0.0
    est = synth.copy()
    est[inside] = synth[inside] + gamma[inside] * (y[inside] - synth[inside])
    xax = np.einsum("ij,jk,ik->i", X, fit.cov_beta, X)
    g1 = np.where(inside, gamma * np.where(inside, psi, 0.0), s2)
    g2 = (1 - gamma) ** 2 * xax
    g3 = np.zeros(len(y))
    g3[inside] = psi[inside] ** 2 / (s2 + psi[inside]) ** 3 * fit.var_sigma2_u
    mse = g1 + g2 + 2 * g3
    if fit.method == "ML":  # the ML estimate of s2u is biased by b = -tr(A^-1 B) / sum v^-2; dg1/ds2u = (1 - gamma)^2
        v = s2 + psi[inside]
        A = X[inside].T @ (X[inside] / v[:, None])
        B = X[inside].T @ (X[inside] / (v ** 2)[:, None])
        b_ml = -float(np.trace(np.linalg.solve(A, B))) / float((1.0 / v ** 2).sum())
        mse = mse - b_ml * (1 - gamma) ** 2
    return FHPrediction(est, gamma, g1, g2, g3, mse)


FHTransform = Literal["none", "log", "arcsine"]


def fh_to_model_scale(direct: np.ndarray, variance: np.ndarray, transform: FHTransform,
                      effective_n: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Direct estimates and their variances on the model's scale: log (delta method, ``psi / y^2``) or
    arcsine square root (variance ``1 / (4 n_eff)``, Jiang et al. 2001; Casas-Cordero et al. 2016)."""
    y, psi = np.asarray(direct, float), np.asarray(variance, float)
    if transform == "none":
        return y, psi
    if transform == "log":
        if np.any(y[np.isfinite(y)] <= 0):
            raise AnalysisError("Fay–Herriot: the log transformation needs direct estimates above 0.")
        return np.log(y), psi / y ** 2
    if np.any((y[np.isfinite(y)] < 0) | (y[np.isfinite(y)] > 1)):
        raise AnalysisError("Fay–Herriot: the arcsine transformation is for proportions (direct estimates in 0…1).")
    if effective_n is None:
        raise AnalysisError("Fay–Herriot: the arcsine transformation needs each area's effective sample size.")
    n = np.asarray(effective_n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.arcsin(np.sqrt(y)), np.where(n > 0, 1.0 / (4.0 * n), np.nan)


def fh_back(theta: np.ndarray, mse: np.ndarray, g1: np.ndarray, transform: FHTransform) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Estimates on the original scale with the analytic MSE where one exists.

    log: ``exp(theta + mse / 2)`` and ``exp(2 theta + mse) (exp(mse) - 1)`` (the "crude" correction of Neves et al.
    2013, as in emdi); arcsine: ``E[sin^2 t]`` for ``t ~ N(theta, g1)``, which is ``(1 - exp(-2 g1) cos 2 theta) / 2``
    (the bias-corrected back-transformation of Hadam et al. 2020, in closed form); its MSE needs the bootstrap
    (NaN here)."""
    if transform == "none":
        return theta, mse
    if transform == "log":
        return np.exp(theta + mse / 2), np.exp(2 * theta + mse) * np.expm1(mse)
    return (1 - np.exp(-2 * g1) * np.cos(2 * theta)) / 2, np.full(len(theta), np.nan)


def _fh_point(theta: np.ndarray, g1: np.ndarray, mse: np.ndarray, transform: FHTransform) -> np.ndarray:
    return fh_back(theta, mse, g1, transform)[0]


def bootstrap_fay_herriot(fit: FHFit, y: np.ndarray, X: np.ndarray, psi: np.ndarray, transform: FHTransform,
                          replicates: int, rng: np.random.Generator,
                          bench: tuple[np.ndarray, np.ndarray, np.ndarray, str] | None = None) -> np.ndarray:
    """Parametric bootstrap MSE on the original scale (González-Manteiga et al. 2008): true values
    ``x'beta + u*`` of every area, direct estimates ``+ e*`` where the survey has one, the model refitted and the
    whole estimator (back-transformation and benchmarking included) applied to each replicate.

    Without a transformation the bootstrap's known downward bias, that of ``g1 + g2`` evaluated at an estimated
    s2u (about ``-g3``), is corrected by its bootstrap estimate, as in Butar & Lahiri (2003):
    ``mse = E*[(est* - truth*)^2] + (g1 + g2)(s2u) - E*[(g1 + g2)(s2u*)]`` (at least 0)."""
    inside = np.isfinite(y) & np.isfinite(psi)
    sd_u, sd_e = np.sqrt(fit.sigma2_u), np.sqrt(np.where(inside, psi, 0.0))
    xb = X @ fit.beta
    acc = np.zeros(len(y))
    g12 = np.zeros(len(y))
    for _ in range(replicates):
        theta = xb + rng.standard_normal(len(y)) * sd_u
        ystar = np.where(inside, theta + rng.standard_normal(len(y)) * sd_e, np.nan)
        f = fit_fay_herriot(ystar[inside], X[inside], psi[inside], fit.method)  # type: ignore[arg-type]
        pr = predict_fay_herriot(f, ystar, X, psi)
        est = _fh_point(pr.estimate, pr.g1, pr.mse, transform)
        truth = _fh_point(theta, np.zeros(len(y)), np.zeros(len(y)), transform)  # g1 = 0: exp, sin^2
        if bench is not None:
            est = benchmark(est, *bench)
        acc += (est - truth) ** 2
        g12 += pr.g1 + pr.g2
    mse = acc / replicates
    if transform == "none":
        here = predict_fay_herriot(fit, y, X, psi)
        mse = np.maximum(mse + here.g1 + here.g2 - g12 / replicates, 0.0)
    return mse


def benchmark(estimate: np.ndarray, share: np.ndarray, groups: np.ndarray, totals: np.ndarray,
              how: str = "ratio") -> np.ndarray:
    """Benchmark estimates so that, within each group g, ``sum_d share_d * estimate_d = totals[g]``, where the
    shares of a group sum to 1 (e.g. population shares; Datta et al. 2011). ``ratio`` scales, ``difference`` adds
    the same amount to each area of the group."""
    est = np.asarray(estimate, float).copy()
    for g in np.unique(groups):
        sel = groups == g
        w = share[sel] / share[sel].sum()
        current = float((w * est[sel]).sum())
        if how == "ratio":
            if current == 0:
                raise AnalysisError("benchmarking: the estimates of a group sum to 0; use the difference method.")
            est[sel] *= totals[g] / current
        else:
            est[sel] += totals[g] - current
    return est


# ------------------------------------------------------------------------------------------------- direct estimates
@dataclass(frozen=True)
class Direct:
    """Hájek estimates per area with linearisation variances (PSUs with replacement within each area)."""

    estimate: np.ndarray
    variance: np.ndarray  # NaN where it cannot be estimated (one unit or one PSU)
    n: np.ndarray  # sampled units
    effective_n: np.ndarray  # p (1 - p) / variance for proportions, else n


def direct_estimates(value: np.ndarray, weight: np.ndarray, area: np.ndarray, n_areas: int,
                     psu: np.ndarray | None = None, proportion: bool = False) -> Direct:
    """``sum w y / sum w`` per area and its variance ``n_c / (n_c - 1) sum_c (t_c - t_bar)^2`` with
    ``t_c = sum_{j in c} w_j (y_j - est) / sum w`` over the area's PSUs ``c`` (each unit its own PSU if none are
    given); Wolter (2007), §6.11."""
    value, weight = np.asarray(value, float), np.asarray(weight, float)
    sw = np.bincount(area, weight, n_areas)
    n = np.bincount(area, minlength=n_areas).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.bincount(area, weight * value, n_areas) / sw
        z = weight * (value - est[area]) / sw[area]
        if psu is None:
            cl = np.arange(len(value))
        else:
            _, cl = np.unique(np.column_stack([area, psu]).astype(str), axis=0, return_inverse=True)
            cl = cl.ravel()
        t = np.bincount(cl, z)
        cl_area = np.zeros(len(t), dtype=int)
        cl_area[cl] = area
        nc = np.bincount(cl_area, minlength=n_areas).astype(float)
        tbar = np.bincount(cl_area, t, n_areas) / nc
        ss = np.bincount(cl_area, (t - tbar[cl_area]) ** 2, n_areas)
        var = np.where(nc > 1, nc / (nc - 1) * ss, np.nan)
        if proportion:
            neff = np.where(var > 0, est * (1 - est) / var, n)
        else:
            neff = n
    return Direct(est, var, n, neff)


# ------------------------------------------------------------------------------------------------- transformations
@dataclass(frozen=True)
class Transform:
    """``T(y)`` of the unit model: none, log(y + shift) or Box-Cox ((y + shift)^lambda - 1) / lambda."""

    kind: Literal["none", "log", "box-cox"] = "none"
    lam: float = 0.0
    shift: float = 0.0

    def forward(self, y: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return y
        ys = y + self.shift
        if self.kind == "log" or abs(self.lam) < 1e-12:
            return np.log(ys)
        return (ys ** self.lam - 1) / self.lam

    def inverse(self, t: np.ndarray) -> np.ndarray:
        """Back to incomes; a Box-Cox value below ``-1/lambda`` (no income maps there) is the lowest income."""
        if self.kind == "none":
            return t
        if self.kind == "log" or abs(self.lam) < 1e-12:
            return np.exp(t) - self.shift
        base = np.maximum(self.lam * t + 1, 0.0)
        with np.errstate(divide="ignore"):
            return base ** (1 / self.lam) - self.shift

    def log_jacobian(self, y: np.ndarray) -> float:
        if self.kind == "none":
            return 0.0
        ys = y + self.shift
        lam = 0.0 if self.kind == "log" else self.lam
        return float((lam - 1) * np.log(ys).sum())


def needed_shift(y: np.ndarray) -> float:
    """Incomes must be above 0 for log and Box-Cox: shift by |min| + 1 when some are not (as emdi does)."""
    lo = float(np.min(y))
    return 0.0 if lo > 0 else abs(lo) + 1.0


# ------------------------------------------------------------------------------------------------- nested-error fit
@dataclass(frozen=True)
class _Suff:
    """The sufficient statistics of the nested-error likelihood that depend on X only."""

    X: np.ndarray
    area: np.ndarray  # 0..D-1 for each sample unit
    n_d: np.ndarray
    XtX: np.ndarray
    Sx: np.ndarray  # D × p: sum of x per area


def _suff(X: np.ndarray, area: np.ndarray, n_areas: int) -> _Suff:
    Sx = np.zeros((n_areas, X.shape[1]))
    np.add.at(Sx, area, X)
    return _Suff(X, area, np.bincount(area, minlength=n_areas).astype(float), X.T @ X, Sx)


@dataclass(frozen=True)
class NestedErrorFit:
    method: str
    beta: np.ndarray
    cov_beta: np.ndarray
    sigma2_u: float
    sigma2_e: float
    loglik: float  # restricted (REML) or full (ML) log-likelihood of the transformed incomes
    gamma: np.ndarray  # per area of the sample index: s2u / (s2u + s2e / n_d); 0 where n_d = 0
    u_hat: np.ndarray  # gamma_d (ybar_d - xbar_d' beta)


def _profile(lam: float, s: _Suff, y: np.ndarray, yty: float, Xty: np.ndarray, Sy: np.ndarray,
             method: str) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(log-likelihood, beta, M, s2e) at the variance ratio lam = s2u / s2e, with everything else profiled out.
    V_d = s2e (I + lam 11'), so V_d^-1 = (I - a_d 11') / s2e with a_d = lam / (1 + n_d lam)."""
    n, p = s.X.shape
    a = lam / (1 + s.n_d * lam)
    M = s.XtX - (s.Sx * a[:, None]).T @ s.Sx
    b = Xty - s.Sx.T @ (a * Sy)
    try:  # numpy's LAPACK calls: a few microseconds for these p × p matrices, half of scipy's wrappers' cost
        chol = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        raise AnalysisError("unit model: the covariates are collinear (or one is constant within the sample); "
                            "drop one.") from None
    beta = np.linalg.solve(M, b)
    q = yty - float((a * Sy * Sy).sum()) - float(b @ beta)
    logdet_v = float(np.log1p(s.n_d * lam).sum())
    if method == "ML":
        s2e = q / n
        ll = -0.5 * (n * (np.log(2 * np.pi * s2e) + 1) + logdet_v)
    else:
        s2e = q / (n - p)
        logdet_m = 2 * float(np.log(np.diag(chol)).sum())
        ll = -0.5 * ((n - p) * (np.log(2 * np.pi * s2e) + 1) + logdet_v + logdet_m)
    return ll, beta, M, s2e


def fit_nested_error(y: np.ndarray, X: np.ndarray, area: np.ndarray, n_areas: int, method: Method = "REML",
                     suff: _Suff | None = None) -> NestedErrorFit:
    """REML or ML fit of ``y_dj = x_dj'beta + u_d + e_dj``: one-dimensional maximisation of the profile
    likelihood in the variance ratio (bounded Brent on its logarithm, and the boundary 0), with the likelihood in
    closed form from per-area sums (Searle, Casella & McCulloch 1992, §6.8)."""
    y = np.asarray(y, float)
    s = suff if suff is not None else _suff(np.asarray(X, float), area, n_areas)
    n, p = s.X.shape
    if n <= p + 1:
        raise AnalysisError(f"unit model: {n} sampled units cannot fit {p} coefficients.")
    if int((s.n_d > 0).sum()) < 2:
        raise AnalysisError("unit model: the sample must cover at least two areas.")
    yty, Xty = float(y @ y), s.X.T @ y
    Sy = np.bincount(s.area, y, n_areas)

    def neg(t: float) -> float:
        return -_profile(float(np.exp(t)), s, y, yty, Xty, Sy, method)[0]

    res = optimize.minimize_scalar(neg, bounds=(-18.0, 12.0), method="bounded", options={"xatol": 1e-9})
    lam = float(np.exp(res.x))
    if _profile(0.0, s, y, yty, Xty, Sy, method)[0] >= -float(res.fun):
        lam = 0.0
    ll, beta, M, s2e = _profile(lam, s, y, yty, Xty, Sy, method)
    s2u = lam * s2e
    if not (np.isfinite(ll) and s2e > 0 and np.all(np.isfinite(beta))):
        raise AnalysisError("unit model: the fit did not give finite estimates (incomes all equal within the "
                            "model, or of extreme size?).")
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(s.n_d > 0, lam * s.n_d / (1 + lam * s.n_d), 0.0)
        ybar = np.where(s.n_d > 0, Sy / s.n_d, 0.0)
        xbar = np.where(s.n_d[:, None] > 0, s.Sx / np.maximum(s.n_d, 1)[:, None], 0.0)
    u_hat = gamma * (ybar - xbar @ beta)
    return NestedErrorFit(method, beta, s2e * np.linalg.inv(M), float(s2u), float(s2e), float(ll), gamma, u_hat)


def fit_transformed(y: np.ndarray, X: np.ndarray, area: np.ndarray, n_areas: int, kind: str, method: Method,
                    lam_bounds: tuple[float, float] = (-1.0, 2.0)) -> tuple[NestedErrorFit, Transform]:
    """The unit model on ``T(y)``; Box-Cox's lambda maximises the profile likelihood plus the Jacobian (Box & Cox
    1964; Rojas-Perilla et al. 2020)."""
    s = _suff(np.asarray(X, float), area, n_areas)
    if kind == "none":
        return fit_nested_error(y, X, area, n_areas, method, s), Transform()
    shift = needed_shift(y)
    if kind == "log":
        tr = Transform("log", 0.0, shift)
        return fit_nested_error(tr.forward(y), X, area, n_areas, method, s), tr

    def neg(lam: float) -> float:
        tr = Transform("box-cox", lam, shift)
        return -(fit_nested_error(tr.forward(y), X, area, n_areas, method, s).loglik + tr.log_jacobian(y))

    res = optimize.minimize_scalar(neg, bounds=lam_bounds, method="bounded", options={"xatol": 1e-5})
    tr = Transform("box-cox", float(res.x), shift)
    return fit_nested_error(tr.forward(y), X, area, n_areas, method, s), tr


# ------------------------------------------------------------------------------------------------- EBP
INDICATORS = ("fgt0", "fgt1", "fgt2", "mean")


def poverty_gap(y: np.ndarray, z: float) -> np.ndarray:
    """``(z - y) / z`` below the line, 0 above it: FGT_alpha of a person is ``gap^alpha`` (and ``1(y < z)`` for
    alpha = 0)."""
    return np.clip(1 - y / z, 0.0, None) * (y < z)


def aggregate(values: np.ndarray, persons: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Person-weighted means of area values per larger unit (``groups``: the larger unit of each area)."""
    return np.bincount(groups, np.nan_to_num(values) * persons, n_groups) / np.bincount(groups, persons, n_groups)
_GL = np.polynomial.legendre.leggauss(24)
_GH = np.polynomial.hermite.hermgauss(32)


def _unit_expectations(m: np.ndarray, s: np.ndarray, z: float, tr: Transform) -> tuple[np.ndarray, ...]:
    """E[FGT0], E[FGT1], E[FGT2] and E[y] of households whose transformed income is N(m, s^2)."""
    tz = float(tr.forward(np.array([z]))[0])
    a = (tz - m) / s
    f0 = special.ndtr(a)
    if tr.kind == "none":
        pdf = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
        gap = z - m
        f1 = (gap * f0 + s * pdf) / z
        f2 = ((gap * gap + s * s) * f0 + gap * s * pdf) / (z * z)
        return f0, f1, f2, m
    if tr.kind == "log" or abs(tr.lam) < 1e-12:
        sh = tr.shift
        e1 = np.exp(m + s * s / 2)
        ey1 = e1 * special.ndtr(a - s) - sh * f0  # E[y 1(y < z)]
        ey2 = np.exp(2 * m + 2 * s * s) * special.ndtr(a - 2 * s) - 2 * sh * e1 * special.ndtr(a - s) + sh * sh * f0
        return f0, f0 - ey1 / z, f0 - 2 * ey1 / z + ey2 / (z * z), e1 - sh
    # Box-Cox: E[g(y) 1(y < z)] = integral over u in (0, Phi(a)) of g(T^-1(m + s Phi^-1(u))) (Gauss–Legendre),
    # E[y] by Gauss–Hermite
    x, w = _GL
    u = f0[:, None] * (x + 1)[None, :] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = m[:, None] + s[:, None] * special.ndtri(np.clip(u, 1e-300, 1.0))
    gap = poverty_gap(tr.inverse(t), z)
    f1 = (gap * w).sum(axis=1) * f0 / 2
    f2 = (gap * gap * w).sum(axis=1) * f0 / 2
    hx, hw = _GH
    mean = (tr.inverse(m[:, None] + s[:, None] * np.sqrt(2) * hx[None, :]) * hw).sum(axis=1) / np.sqrt(np.pi)
    return f0, f1, f2, mean


@dataclass(frozen=True)
class Population:
    """The population's households: covariates, area (0..D-1) and a weight (persons, or 1 per household)."""

    X: np.ndarray
    area: np.ndarray
    weight: np.ndarray
    n_areas: int
    total: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", np.bincount(self.area, self.weight, self.n_areas))


def ebp(fit: NestedErrorFit, tr: Transform, pop: Population, z: float, chunk: int = 200_000) -> dict[str,
                                                                                                   np.ndarray]:
    """Empirical best predictors of FGT(0, 1, 2) and the mean income of each area (census EB: every household of
    the population predicted from the model, Molina & Rao 2010, §4; Correa, Molina & Rao 2012)."""
    sums = {k: np.zeros(pop.n_areas) for k in INDICATORS}
    for lo in range(0, len(pop.area), chunk):
        a = pop.area[lo:lo + chunk]
        m = pop.X[lo:lo + chunk] @ fit.beta + fit.u_hat[a]
        s = np.sqrt(fit.sigma2_e + fit.sigma2_u * (1 - fit.gamma[a]))
        w = pop.weight[lo:lo + chunk]
        for k, v in zip(INDICATORS, _unit_expectations(m, s, z, tr), strict=True):
            sums[k] += np.bincount(a, w * v, pop.n_areas)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: v / pop.total for k, v in sums.items()}


def _true_fgt(t: np.ndarray, tr: Transform, pop: Population, z: float) -> dict[str, np.ndarray]:
    y = tr.inverse(t)
    gap = poverty_gap(y, z)
    w = pop.weight
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"fgt0": np.bincount(pop.area, w * (y < z), pop.n_areas) / pop.total,
                "fgt1": np.bincount(pop.area, w * gap, pop.n_areas) / pop.total,
                "fgt2": np.bincount(pop.area, w * gap * gap, pop.n_areas) / pop.total,
                "mean": np.bincount(pop.area, w * y, pop.n_areas) / pop.total}


def bootstrap_ebp(fit: NestedErrorFit, tr: Transform, Xs: np.ndarray, area_s: np.ndarray, pop: Population, z: float,
                  replicates: int, rng: np.random.Generator, groups: np.ndarray | None = None,
                  progress: Any = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Parametric bootstrap MSE (González-Manteiga et al. 2008; Molina & Rao 2010, §5): a population and a sample
    generated from the fitted model, its true FGTs, the model refitted on the sample (transformation parameters
    kept) and the EBP recomputed; MSE is the mean squared difference over the replicates. ``groups`` (the larger
    unit of each area) adds the MSE of the person-weighted aggregates per larger unit."""
    s = _suff(np.asarray(Xs, float), area_s, pop.n_areas)
    xb_pop, xb_s = pop.X @ fit.beta, s.X @ fit.beta
    sd_u, sd_e = np.sqrt(fit.sigma2_u), np.sqrt(fit.sigma2_e)
    acc = {k: np.zeros(pop.n_areas) for k in INDICATORS}
    n_groups = 0 if groups is None else int(groups.max()) + 1
    gacc = {k: np.zeros(n_groups) for k in INDICATORS}
    for _ in range(replicates):
        u = rng.standard_normal(pop.n_areas) * sd_u
        t_pop = xb_pop + u[pop.area] + rng.standard_normal(len(pop.area)) * sd_e
        truth = _true_fgt(t_pop, tr, pop, z)
        t_s = xb_s + u[area_s] + rng.standard_normal(len(area_s)) * sd_e
        f = fit_nested_error(t_s, s.X, area_s, pop.n_areas, fit.method, s)  # type: ignore[arg-type]
        est = ebp(f, tr, pop, z)
        for k in INDICATORS:
            acc[k] += (est[k] - truth[k]) ** 2
            if groups is not None:
                gacc[k] += aggregate(est[k] - truth[k], pop.total, groups, n_groups) ** 2
        if progress is not None:
            progress()
    return ({k: v / replicates for k, v in acc.items()},
            {k: v / replicates for k, v in gacc.items()} if groups is not None else None)


# ------------------------------------------------------------------------------------------------- diagnostics
def coefficient_table(names: list[str], beta: np.ndarray, cov: np.ndarray) -> list[dict[str, Any]]:
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        zval = beta / se
    pval = 2 * stats.norm.sf(np.abs(zval))
    return [{"name": n, "estimate": float(b), "std_error": float(e), "z": float(t), "p_value": float(q)}
            for n, b, e, t, q in zip(names, beta, se, zval, pval, strict=True)]


def normality(values: np.ndarray, rng: np.random.Generator) -> dict[str, float | int | None]:
    """Skewness, excess kurtosis and the Shapiro–Wilk test (on 5,000 values drawn when there are more)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 3 or float(np.std(v)) == 0.0:
        return {"n": int(len(v)), "skewness": None, "kurtosis": None, "shapiro_w": None, "shapiro_p": None}
    sample = rng.choice(v, 5000, replace=False) if len(v) > 5000 else v
    w, p = stats.shapiro(sample)
    return {"n": int(len(v)), "skewness": float(stats.skew(v)), "kurtosis": float(stats.kurtosis(v)),
            "shapiro_w": float(w), "shapiro_p": float(p)}


def cv(estimate: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """sqrt(MSE) / |estimate| (NaN where the estimate is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(estimate) > 0, np.sqrt(mse) / np.abs(estimate), np.nan)

"""Empirical sample complexity of CNN, LCN and FCN on the DSD task.

Lahoti et al. (ICLR 2024, "Role of Locality and Weight Sharing in Image-Based Tasks") prove,
for k patches of dimension d and noise sigma: CNN O~(sigma^2 (k + d)); LCN between
Omega(sigma^2 k d) and O~(sigma^2 k (k + d)); FCN Omega(sigma^2 k^2 d). The paper has no
experiments; this sweep measures the sample complexity and fits n* ~ k^a d^b.

Procedure, for each architecture and each (k, d) of the grid:

* n ranges over a geometric grid (``steps_per_octave`` points per doubling, from ``n_min`` to
  ``n_max``). Training on n samples is repeated for ``seeds`` seeds (a fresh training set and
  fresh initial weights per seed; the test set of ``test_size`` fresh samples is shared).
* "Reaches" means: the mean test accuracy over the seeds is at least the target, where the
  target is a fraction of the way from chance to the Bayes-optimal accuracy of that (k, d):
  ``chance + target * (bayes - chance)``. The Bayes accuracy falls as k grows (more noise
  patches can mimic the signal), so an absolute target would measure the noise, not the
  learner.
* n* is the smallest grid n that reaches the target (test accuracy rises with n): found by
  trying one n per octave upwards from ``n_min`` and then bisecting the last octave, so the
  cost stays near that of training at n*. A point where even ``n_max`` fails is recorded
  with ``n_star = null`` and left out of the fit.
* Per architecture, least squares on log n* = a log k + b log d + c gives the exponents.

Training is plain full-batch backprop with Adam (``steps`` steps, lr ``lr``), stopped early
when the training loss stops improving. It bypasses the engine's ``Run`` on purpose: the sweep
makes hundreds of fits of a few hundred parameters, where a run directory, memory meters and a
test evaluation per epoch would cost more than the fit itself.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from locallearn.data.base import Dataset
from locallearn.data.dsd import bayes_accuracy, sample_dsd, signal_direction
from locallearn.errors import UsageError
from locallearn.models import build_model

ARCHITECTURES = ("dsd-cnn", "dsd-lcn", "dsd-fcn")
# Theory (Lahoti et al. 2024, Table 1 / Theorems): the exponents of k and d a power-law fit
# would give in the regime where each bound's leading term dominates.
THEORY = {
    "dsd-cnn": "sigma^2 (k + d): additive, so a power-law fit gives exponents below 1",
    "dsd-lcn": "sigma^2 k d (lower) .. sigma^2 k (k + d) (upper): about k^1 d^1",
    "dsd-fcn": "sigma^2 k^2 d (lower): about k^2 d^1",
}


@dataclass
class SweepConfig:
    """Every knob of the sweep; the defaults are the quick grid (minutes on 2 CPU cores)."""

    patches: Sequence[int] = (2, 4, 8)
    patch_dims: Sequence[int] = (4, 8, 16)
    models: Sequence[str] = ARCHITECTURES
    sigma: float = 0.5
    seeds: int = 3
    target: float = 0.75  # fraction of the way from chance (0.5) to the Bayes accuracy
    n_min: int = 2
    n_max: int = 4096
    steps_per_octave: int = 3
    width: int = 4
    steps: int = 200
    lr: float = 0.02
    test_size: int = 2000
    data_seed: int = 0

    def validate(self) -> None:
        if not 0 < self.target < 1:
            raise UsageError(f"--target must be in (0, 1), got {self.target}")
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.sigma > 0:
            raise UsageError(f"--sigma must be positive, got {self.sigma}")
        if not 1 <= self.n_min < self.n_max:
            raise UsageError(f"need 1 <= n_min < n_max, got {self.n_min}, {self.n_max}")
        for name in self.models:
            if name not in ARCHITECTURES:
                raise UsageError(
                    f"unknown DSD architecture {name!r} (valid: {', '.join(ARCHITECTURES)})"
                )
        if len(set(self.patches)) < 2 or len(set(self.patch_dims)) < 2:
            raise UsageError("the grid needs at least two values of k and two of d to fit")


FULL = {"patches": (2, 4, 8, 16), "patch_dims": (4, 8, 16, 32, 64), "seeds": 5, "n_max": 65536}


def n_grid(n_min: int, n_max: int, steps_per_octave: int) -> list[int]:
    """Geometric grid of training-set sizes, rounded to integers, strictly increasing."""
    count = int(math.floor(steps_per_octave * math.log2(n_max / n_min) + 1e-9)) + 1
    values = sorted({round(n_min * 2 ** (i / steps_per_octave)) for i in range(count)})
    return values


def smallest_reaching(
    grid: Sequence[int], reaches: Callable[[int], bool], stride: int = 1
) -> int | None:
    """The smallest grid value for which ``reaches`` holds, assuming it is monotone in n.

    Galloping search: try every ``stride``-th value upwards from the smallest until one
    reaches (None if even the largest fails), then bisect the gap below it. Starting small
    keeps the cost near that of training at n* rather than at the top of the grid.
    """
    lo, i = -1, 0  # invariant: everything at index <= lo fails
    while not reaches(grid[i]):
        lo = i
        if i == len(grid) - 1:
            return None
        i = min(i + max(stride, 1), len(grid) - 1)
    hi = i  # grid[hi] reaches
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reaches(grid[mid]):
            hi = mid
        else:
            lo = mid
    return grid[hi]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run with one intra-op thread: the networks are tiny, and on a shared machine
    intra-op threads spend their time waiting for each other (measured: 10-20x slower with
    2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()
def train_seeds(
    model_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    width: int,
    steps: int,
    lr: float,
) -> list[float]:
    """Train one network per seed, all at once; the test accuracy of each.

    ``x`` is (S, n, k, d), ``y`` (S, n): seed s trains on x[s] from the initial weights of
    ``torch.manual_seed(s)``. The S networks are stacked and run with ``torch.func.vmap``
    (one batched forward/backward instead of S small ones, the sweep's bottleneck); the loss
    is the sum of the S independent losses and Adam is elementwise, so each network follows
    exactly the full-batch Adam trajectory it would follow alone. Training stops at ``steps``
    or when the summed training loss has not improved by 0.1% in 50 steps.
    """
    seeds, n = y.shape
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        nets.append(build_model(model_name, tuple(x.shape[2:]), 2, width=width))
    params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
    template = copy.deepcopy(nets[0]).to("meta")

    def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inputs: torch.Tensor):
        return functional_call(template, (p, b), (inputs,))

    batched = vmap(forward)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    best, since = math.inf, 0
    for _ in range(steps):
        logits = batched(params, buffers, x)  # (S, n, 2)
        losses = F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1), reduction="none")
        loss = losses.view(seeds, n).mean(dim=1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        if value < best * 0.999:
            best, since = value, 0
        else:
            since += 1
            if since >= 50:
                break
    with torch.no_grad():
        test = x_test.expand(seeds, *x_test.shape)
        pred = batched(params, buffers, test).argmax(dim=2)  # (S, n_test)
    return [float(a) for a in (pred == y_test).float().mean(dim=1)]


def mean_accuracy(
    cfg: SweepConfig, name: str, n: int, w_star: torch.Tensor, k: int, test: Dataset
) -> float:
    """Mean test accuracy of ``name`` trained on n samples, over ``cfg.seeds`` seeds."""
    xs, ys = [], []
    for seed in range(cfg.seeds):
        # A fresh training set per seed (same w_star); the test set is shared.
        g = torch.Generator().manual_seed(cfg.data_seed + 1000 * (seed + 1))
        x, y, _ = sample_dsd(n, w_star, k, cfg.sigma, g)
        xs.append(x)
        ys.append(y)
    accs = train_seeds(
        name,
        torch.stack(xs),
        torch.stack(ys),
        test.x_test,
        test.y_test,
        width=cfg.width,
        steps=cfg.steps,
        lr=cfg.lr,
    )
    return float(np.mean(accs))


def find_n_star(
    cfg: SweepConfig,
    grid: Sequence[int],
    name: str,
    w_star: torch.Tensor,
    k: int,
    test: Dataset,
    goal: float,
) -> tuple[int | None, dict[int, float]]:
    """(n*, mean accuracy at every n tried) for one architecture and one (k, d)."""
    tried: dict[int, float] = {}

    def reaches(n: int) -> bool:
        tried[n] = mean_accuracy(cfg, name, n, w_star, k, test)
        return tried[n] >= goal

    return smallest_reaching(grid, reaches, cfg.steps_per_octave), tried


def _dataset(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
) -> Dataset:
    return Dataset("dsd", x, y, x_test, y_test, classes=2)


def fit_exponents(points: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Least squares log n* = a log k + b log d + c over points with an n*; None if < 3."""
    rows = [p for p in points if p["n_star"] is not None]
    if len(rows) < 3:
        return None
    a = np.array([[math.log(p["k"]), math.log(p["d"]), 1.0] for p in rows])
    t = np.array([math.log(p["n_star"]) for p in rows])
    coef, *_ = np.linalg.lstsq(a, t, rcond=None)
    pred = a @ coef
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {
        "k": float(coef[0]),
        "d": float(coef[1]),
        "c": float(coef[2]),
        "r2": r2,
        "points": len(rows),
    }


@dataclass
class SweepResult:
    config: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    fits: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "study": "dsd-sample-complexity",
            "paper": "Lahoti et al., ICLR 2024 (Role of Locality and Weight Sharing)",
            "config": self.config,
            "theory": THEORY,
            "fits": self.fits,
            "points": self.points,
            "seconds": self.seconds,
        }


def run_sweep(
    cfg: SweepConfig,
    log: Callable[[str], None] | None = None,
    on_point: Callable[[SweepResult], None] | None = None,
) -> SweepResult:
    """Measure n* for every architecture and (k, d), and fit the exponents.

    ``log`` gets one progress line per point; ``on_point`` the result so far (fits of the
    points measured yet), so a caller can save partial results of a long sweep.
    """
    cfg.validate()
    return _run_sweep(cfg, log, on_point)


def _run_sweep(
    cfg: SweepConfig,
    log: Callable[[str], None] | None,
    on_point: Callable[[SweepResult], None] | None,
) -> SweepResult:
    grid = n_grid(cfg.n_min, cfg.n_max, cfg.steps_per_octave)
    result = SweepResult(config={**asdict(cfg), "n_grid": grid})
    start = time.perf_counter()
    for k in cfg.patches:
        for d in cfg.patch_dims:
            w_star = signal_direction(d, cfg.data_seed)
            x_test, y_test, _ = sample_dsd(
                cfg.test_size, w_star, k, cfg.sigma, torch.Generator().manual_seed(cfg.data_seed)
            )
            test = _dataset(x_test[:1], y_test[:1], x_test, y_test)
            bayes = bayes_accuracy(test, w_star, cfg.sigma)
            goal = 0.5 + cfg.target * (bayes - 0.5)
            for name in cfg.models:
                n_star, tried = find_n_star(cfg, grid, name, w_star, k, test, goal)
                point = {
                    "model": name,
                    "k": k,
                    "d": d,
                    "n_star": n_star,
                    "bayes_acc": bayes,
                    "target_acc": goal,
                    "tried": {str(n): acc for n, acc in sorted(tried.items())},
                }
                result.points.append(point)
                if on_point:
                    result.fits = {
                        m: fit_exponents([p for p in result.points if p["model"] == m])
                        for m in cfg.models
                    }
                    result.seconds = time.perf_counter() - start
                    on_point(result)
                if log:
                    log(
                        f"[sweep dsd] {name} k={k} d={d}: n*={n_star if n_star else '>max'} "
                        f"(target acc {goal:.3f}, Bayes {bayes:.3f}, "
                        f"{time.perf_counter() - start:.0f}s)"
                    )
    for name in cfg.models:
        result.fits[name] = fit_exponents([p for p in result.points if p["model"] == name])
    result.seconds = time.perf_counter() - start
    return result


def table(result: SweepResult) -> str:
    """n* per (k, d) for every architecture, then the fitted exponents."""
    from locallearn.report import format_table

    models = list(result.config["models"])
    keys = sorted({(p["k"], p["d"]) for p in result.points})
    by = {(p["model"], p["k"], p["d"]): p for p in result.points}
    rows = []
    for k, d in keys:
        here = [by.get((m, k, d)) for m in models]  # None: not measured (yet)
        first = next(p for p in here if p is not None)
        cells = [
            "-" if p is None else ">max" if p["n_star"] is None else str(p["n_star"]) for p in here
        ]
        rows.append([k, d, f"{first['bayes_acc']:.3f}", *cells])
    text = format_table(["k", "d", "Bayes acc", *[f"n* {m}" for m in models]], rows)
    fit_rows = []
    for m in models:
        f = result.fits.get(m)
        fit_rows.append(
            [
                m,
                *(
                    ["-"] * 4
                    if f is None
                    else [f"{f['k']:.2f}", f"{f['d']:.2f}", f"{f['c']:.2f}", f"{f['r2']:.3f}"]
                ),
                THEORY[m],
            ]
        )
    fits = format_table(["model", "exp k (a)", "exp d (b)", "c", "R^2", "theory"], fit_rows)
    return text + "\n\n" + fits


def plot(result: SweepResult, path: str | Path) -> None:
    """Log-log n* against k (at the middle d) and against d (at the middle k), with the fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from locallearn.engine.io import atomic_write_bytes

    ks = sorted({p["k"] for p in result.points})
    ds = sorted({p["d"] for p in result.points})
    k_mid, d_mid = ks[len(ks) // 2], ds[len(ds) // 2]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, name in enumerate(result.config["models"]):
        color = f"C{i}"
        fit = result.fits.get(name)
        pts = [p for p in result.points if p["model"] == name and p["n_star"] is not None]
        for ax, fixed, axis, values in (
            (axes[0], ("d", d_mid), "k", ks),
            (axes[1], ("k", k_mid), "d", ds),
        ):
            sel = sorted((p[axis], p["n_star"]) for p in pts if p[fixed[0]] == fixed[1])
            if sel:
                ax.plot(*zip(*sel), "o", color=color)
            if fit is not None:
                grid = np.array(values, dtype=float)
                other = float(fixed[1])
                kk, dd = (grid, other) if axis == "k" else (other, grid)
                line = np.exp(fit["c"]) * np.power(kk, fit["k"]) * np.power(dd, fit["d"])
                ax.plot(
                    grid, line, "-", color=color, label=f"{name}: k^{fit['k']:.2f} d^{fit['d']:.2f}"
                )
    for ax, axis, fixed in (
        (axes[0], "k (patches)", f"d = {d_mid}"),
        (axes[1], "d (patch dimension)", f"k = {k_mid}"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel(axis)
        ax.set_ylabel("n* (samples to reach target)")
        ax.set_title(f"DSD sample complexity, {fixed}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sweep_config(full: bool = False, **overrides: Any) -> SweepConfig:
    """The default (or ``--full``) grid with the options the caller set (None: keep)."""
    values: dict[str, Any] = dict(FULL) if full else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SweepConfig(**values)
    cfg.validate()
    return cfg


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """ "2,4,8" -> (2, 4, 8); anything else is a UsageError naming the flag."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} must be a comma-separated list of integers, got {text!r}")
    if not values or min(values) < 1:
        raise UsageError(f"{flag} must list positive integers, got {text!r}")
    return values


def write_results(result: SweepResult, out: str | Path) -> dict[str, Path]:
    """dsd_sweep.json, dsd_sweep.txt (the table) and dsd_sweep.png in ``out``, atomically."""
    from locallearn.engine.io import atomic_write_json, atomic_write_text

    out = Path(out)
    paths = {
        "json": out / "dsd_sweep.json",
        "table": out / "dsd_sweep.txt",
        "plot": out / "dsd_sweep.png",
    }
    atomic_write_json(paths["json"], result.to_json())
    atomic_write_text(paths["table"], table(result) + "\n")
    plot(result, paths["plot"])
    return paths

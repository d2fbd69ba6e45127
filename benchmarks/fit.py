"""Benchmark: Hoffmann et al.'s fit on Epoch AI's 240 Chinchilla points, batched vs a scipy loop.

Why: the fitting module promises that optimising all 4,500 starts as one batched L-BFGS
problem finds the same optimum as the straightforward approach (one
``scipy.optimize.minimize(method="L-BFGS-B")`` per start) and is much faster. Both run here, in
one process, on the same points and the same starts, and the ratio is printed; so is the time
of a 1,000-resample bootstrap. Three forms of the loop run on all starts: the straightforward
one (the objective written with ``scipy.special`` as in Epoch AI's replication, finite-difference
gradients), the same with the analytic gradient the batched optimiser uses, and a hand-tuned
objective with the analytic gradient, so the ratio against a well-optimised loop is on record
too.

Run: ``python benchmarks/fit.py`` (on the data shipped in ``scaling/fit/published/``).
"""

from __future__ import annotations

import os

# One BLAS thread on both sides, set before numpy loads BLAS. On problems this small, OpenBLAS's
# threads only add hand-offs: scipy's L-BFGS-B (whose C core calls BLAS on 5-vectors) ran up to
# 20x slower per start with 2 BLAS threads on a busy 2-core machine, which would flatter the
# batched optimiser (itself unaffected). Override with e.g. OPENBLAS_NUM_THREADS=2.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling.fit import CHINCHILLA, FitOptions, fit, make_fit_data  # noqa: E402
from scaling.fit.published import data_file  # noqa: E402

DELTA = 1e-3
NAMES = ("E", "A", "alpha", "B", "beta")


def load_epoch_points() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D = C / (6 N), loss of the 240 points left after dropping the 5 highest losses."""
    path = data_file("epoch_chinchilla_points.csv")  # the shipped copy unless MCSCALE_SCALING_DATA is set
    df = pd.read_csv(path).sort_values("loss", kind="stable").iloc[:-5]
    n = df["Model Size"].to_numpy()
    return n, df["Training FLOP"].to_numpy() / (6 * n), df["loss"].to_numpy()


def straightforward_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> float:
    """Hoffmann et al.'s objective as Epoch AI's replication writes it (scipy.special, no gradient)."""
    e, a, alpha, b, beta = theta
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    return float(np.sum(huber(DELTA, pred - log_l)))


def analytic_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple[float, np.ndarray]:
    """The same objective with its analytic gradient (what the batched optimiser also uses)."""
    e, a, alpha, b, beta = theta
    u = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = logsumexp(u, axis=0)
    r = pred - log_l
    w = np.exp(u - pred) * np.clip(r, -DELTA, DELTA)
    grad = np.array([w[2].sum(), w[0].sum(), -(w[0] * log_n).sum(), w[1].sum(), -(w[1] * log_d).sum()])
    return float(np.sum(huber(DELTA, r))), grad


def tuned_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> tuple[float, np.ndarray]:
    """Analytic gradient and a hand-written log-sum-exp (scipy.special.logsumexp costs ~0.1 ms a call)."""
    e, a, alpha, b, beta = theta
    u0, u1 = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(u0, u1), e)
    x0, x1, x2 = np.exp(u0 - top), np.exp(u1 - top), np.exp(e - top)
    z = x0 + x1 + x2
    r = top + np.log(z) - log_l
    psi = np.clip(r, -DELTA, DELTA) / z
    w0, w1 = x0 * psi, x1 * psi
    h = np.where(np.abs(r) <= DELTA, 0.5 * r * r, DELTA * (np.abs(r) - 0.5 * DELTA))
    return float(h.sum()), np.array([(x2 * psi).sum(), w0.sum(), -(w0 @ log_n), w1.sum(), -(w1 @ log_d)])


BASELINES = {
    "straightforward (scipy.special objective, finite-difference gradient)": (straightforward_objective, False),
    "analytic gradient (same objective)": (analytic_objective, True),
    "analytic gradient + hand-written log-sum-exp": (tuned_objective, True),
}


def scipy_block(starts: np.ndarray, args: tuple, fun, jac: bool) -> list:
    """One L-BFGS-B minimisation per start, default settings (the straightforward loop)."""
    return [minimize(fun, start, args=args, jac=jac, method="L-BFGS-B") for start in starts]


class Clock:
    """Wall and CPU seconds of a block: CPU time is what to compare when other work shares the
    machine (both sides here are single-threaded)."""

    def __enter__(self) -> "Clock":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def natural(theta: np.ndarray) -> dict[str, float]:
    e, a, alpha, b, beta = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha), "B": float(np.exp(b)), "beta": float(beta)}


def fmt(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={params[k]:.5g}" for k in NAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed batched fits, interleaved with as many blocks of the scipy loop")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples in the timed bootstrap")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress visible when redirected to a file

    n, d, loss = load_epoch_points()
    data = make_fit_data({"params_nonembed": n, "tokens": d}, loss)
    starts = CHINCHILLA.start_grid()
    print(f"Epoch AI's Chinchilla points: {len(loss)} (5 highest losses dropped), D = C / (6 N)")
    print(f"starts: {len(starts)} (Hoffmann et al.'s grid), Huber delta {DELTA}, cores: {os.cpu_count()}, "
          f"BLAS threads: {os.environ['OPENBLAS_NUM_THREADS']}, load average at start: {os.getloadavg()[0]:.2f}")

    fit(data, CHINCHILLA)  # warm-up: imports, caches
    log_args = (np.log(n), np.log(d), np.log(loss))
    # Interleave: a batched fit, then a block of each scipy loop, and so on, so that all sides
    # see the same background load.
    batched_wall, batched_cpu = [], []
    loops = {name: {"wall": 0.0, "cpu": 0.0, "runs": []} for name in BASELINES}
    blocks = np.array_split(np.arange(len(starts)), args.repeats)
    for i, block in enumerate(blocks):
        with Clock() as c:
            result = fit(data, CHINCHILLA, options=FitOptions(bootstrap=0))
        batched_wall.append(c.wall)
        batched_cpu.append(c.cpu)
        for name, (fun, jac) in BASELINES.items():
            with Clock() as c:
                loops[name]["runs"] += scipy_block(starts[block], log_args, fun, jac)
            loops[name]["wall"] += c.wall
            loops[name]["cpu"] += c.cpu
        print(f"  block {i + 1}/{len(blocks)} done", file=sys.stderr)
    b_wall, b_cpu = statistics.median(batched_wall), statistics.median(batched_cpu)
    ours = result.groups["all"].params
    ours_f = result.settings["fits"][0]["objective_huber"]
    print(f"\nbatched L-BFGS, all {len(starts)} starts together (median of {args.repeats}): "
          f"{b_wall:.2f} s wall, {b_cpu:.2f} s CPU  [wall: {', '.join(f'{t:.2f}' for t in batched_wall)}]")
    print(f"  optimum: {fmt(ours)}  objective {ours_f:.10g}")
    for name, loop in loops.items():
        best = min(loop["runs"], key=lambda r: r.fun)
        theirs = natural(best.x)
        worst = max(abs(ours[k] / theirs[k] - 1.0) for k in NAMES)
        print(f"\nscipy minimize(method='L-BFGS-B') loop over the same {len(starts)} starts, {name}: "
              f"{loop['wall']:.1f} s wall, {loop['cpu']:.1f} s CPU")
        print(f"  optimum: {fmt(theirs)}  objective {best.fun:.10g}")
        print(f"  same optimum: largest relative parameter difference {worst:.2e}, objective difference "
              f"{ours_f - best.fun:+.2e} (negative: batched lower)")
        print(f"  speed ratio (scipy loop / batched): {loop['wall'] / b_wall:.1f}x wall, {loop['cpu'] / b_cpu:.1f}x CPU")

    marks: list[float] = []
    t0 = time.perf_counter()
    boot = fit(data, CHINCHILLA, options=FitOptions(bootstrap=args.bootstrap, seed=0),
               progress=lambda done, total: marks.append(time.perf_counter()) if done == 0 else None)
    total_s = time.perf_counter() - t0
    boot_s = total_s - (marks[0] - t0)
    ci = boot.groups["all"].ci95
    print(f"\nbootstrap, {args.bootstrap} resamples (refit from the full fit's {boot.settings['bootstrap_starts']} best "
          f"distinct optima, {os.cpu_count()} cores): {boot_s:.2f} s (fit + bootstrap {total_s:.2f} s)")
    print("  95% intervals: " + ", ".join(f"{k} [{ci[k][0]:.4g}, {ci[k][1]:.4g}]" for k in NAMES))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

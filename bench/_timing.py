"""Timing shared by the stand-alone benchmarks (imported as ``_timing``: the script's folder is on the path)."""

import time


def best_time(fn, iters, warmup=1):
    """Best of ``iters`` runs of ``fn`` after ``warmup`` untimed ones: the cores are shared, and the minimum
    is the least disturbed figure."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best

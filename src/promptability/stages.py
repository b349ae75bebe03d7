"""Resumable pipeline stages, shared by the demo and the studies.

A stage is skipped when its completion marker exists: the file its writer renames
into place last, so an interrupted pipeline continues from the last finished stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Stages:
    """Runs stages in order, prints what each took (or that it was reused) and keeps the timings."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: list[tuple[str, float, bool]] = []
        self.started = time.perf_counter()

    def run(self, name: str, marker: Path, fn: Callable[[], Any]) -> None:
        if marker.exists():
            self.timings.append((name, 0.0, True))
            print(f"[{self.label}] {name}: done earlier, reused")
            return
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        self.timings.append((name, took, False))
        print(f"[{self.label}] {name}: {took:.1f} s")

    def record(self, name: str, seconds: float) -> None:
        self.timings.append((name, seconds, False))

    def summary(self) -> dict[str, Any]:
        stages = [{"stage": n, "seconds": round(s, 2), "reused": r} for n, s, r in self.timings]
        return {"stages": stages, "total_s": round(time.perf_counter() - self.started, 2)}

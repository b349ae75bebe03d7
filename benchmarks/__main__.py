"""``python -m benchmarks [--size tiny|small|base|large] [--reps N] [--out BENCHMARKS.md] [--device cpu|cuda]
[--bf16] [--only PAIR ...]``: every pair (or those named), the table printed and added to BENCHMARKS.md."""

import sys

from benchmarks.runner import main

sys.exit(main())

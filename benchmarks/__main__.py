"""``python -m benchmarks [--size tiny|small|base|large] [--reps N] [--out BENCHMARKS.md] [--device cpu|cuda] [--bf16]``."""

import sys

from benchmarks.runner import main

sys.exit(main())

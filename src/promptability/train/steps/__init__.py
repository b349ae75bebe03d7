"""Train steps: one file per kind of step, each run by the one loop (``promptability.train.loop.train``)."""

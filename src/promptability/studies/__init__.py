"""The studies: the offline demo (``demo``) and the real study (``real``, with its data folder from ``data``),
both run through one resumable pipeline (``pipeline``)."""

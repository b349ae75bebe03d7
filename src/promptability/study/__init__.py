"""Studies on real data: ``promptability study real`` (a real pretrained LM, real held-out tasks, P3's templates)."""

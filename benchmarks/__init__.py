"""cgkd benchmarks (issue 5): KD comparison table, speed, force maps. Results are written to
``benchmarks/results/*.json`` and summarised by hand in ``docs/benchmarks.md``."""

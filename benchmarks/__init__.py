"""pyboss benchmarks: `python -m benchmarks.reload`."""

"""The simulated V4L2 driver (v4l2sim.c) and its Python harness."""

"""Tests of tunesmith.kernels."""

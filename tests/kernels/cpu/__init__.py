"""Tests of tunesmith.kernels.cpu."""

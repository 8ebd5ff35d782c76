"""Tests of tunesmith.generation."""

"""Tests of learnkit/_thresholds."""

"""Adaptive thresholds: admission, the controller, the learning loop, the config rewrite."""

"""Analysis: the scan, error clusters, threshold advice and the statistics behind them."""

"""What hub and agent processes tell their operators: logs (logs.py) and Prometheus metrics
(metrics.py). docs/operations.md, "Metrics" and "Logs"."""

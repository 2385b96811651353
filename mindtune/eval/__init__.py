"""Task metrics: `mindtune eval` and `train.eval_metrics` (metrics, evaluation rows, log-likelihoods, runner)."""

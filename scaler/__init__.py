"""scaler: the autoscaling sidecar for lb."""

"""Training: cached phantom data, patch samplers, losses and the training loop."""

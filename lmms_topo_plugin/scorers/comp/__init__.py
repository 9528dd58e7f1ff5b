"""CoMP (seed 004): collaborative importance of parameters and tokens, and the multi-mode pruning schedule."""

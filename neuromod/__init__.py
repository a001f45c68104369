"""neuromod."""

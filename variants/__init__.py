"""The variants: one training script per algorithm (run them as scripts; tests import them as modules)."""

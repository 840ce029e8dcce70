"""Sparse SAM (Mi et al., 2023, arXiv 2306.17504): masks and optimizers. Built in a later issue."""

"""Datasets, class tables and transforms."""

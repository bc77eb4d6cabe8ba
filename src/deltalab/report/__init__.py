"""Plots and markdown reports."""

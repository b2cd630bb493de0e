"""Multi-sensor robustness: sensor simulation from real pixels, cross-sensor evaluation, adaptation methods."""

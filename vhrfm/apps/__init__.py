"""Applications: wildfire mapping (:mod:`vhrfm.apps.wildfire`) and marine megafauna detection (to come)."""

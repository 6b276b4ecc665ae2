"""Stage 5 — figures: read computed series or records and draw them; never recompute.

One module per group of figures (e.g. :mod:`.theory` for Figures 2 and 3 and the
Appendix H figure).  Each ``plot_*`` function saves PNG and PDF and returns the paths written.
"""

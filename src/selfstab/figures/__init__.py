"""Stage 5 — figures: draw the series that :mod:`selfstab.records.series` reads; never recompute.

:mod:`.registry` lists the paper's figures (name → drawing functions, captions, the records each
needs) and draws them (:func:`~.registry.draw_figures`); :mod:`.paper` and :mod:`.assumptions`
hold the drawing functions, :mod:`.style` the one table of process labels and colours,
:mod:`.theory` Figures 2 and 3 and the Appendix H figure.  Each
``make_*``/``*_figure`` function returns a matplotlib Figure; each ``plot_*`` or figure-named
function saves PNG and PDF and returns the paths.  Nothing here imports matplotlib at import time.
"""

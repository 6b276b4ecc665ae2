"""The report of a run: what it measured, in a few numbers, and one page that lays them out with its figures.

- :mod:`.measures`: :func:`key_numbers`, the regimes by ``k_crit`` (:func:`regimes`), :func:`relative_error`,
  a run's :func:`status_note`; computed from the records and summary alone (through
  :mod:`selfstab.records.series`), so a report, a comparison page and the slow tests read the same numbers.
- :mod:`.page`: :func:`write_report`, one HTML or Markdown page per run, or one comparing several.
"""

from .measures import (AGREEMENT, MIN_TRACKED_STEPS, key_numbers, regimes, relative_error, status_note,
                       too_few_steps)
from .page import KEY_LABELS, comparison_path, write_report

__all__ = ["AGREEMENT", "KEY_LABELS", "MIN_TRACKED_STEPS", "comparison_path", "key_numbers", "regimes",
           "relative_error", "status_note", "too_few_steps", "write_report"]

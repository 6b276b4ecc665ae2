"""Run directories: config, per-step records (HDF5), summary and checkpoints, all written atomically.

Read a finished or half-finished run in one line, with or without selfstab::

    load_run("runs/x")["gd"]                      # pandas DataFrame indexed by step
    h5py.File("runs/x/records.h5")["gd/loss"][:]  # numpy array, NaN where not recorded
"""

from .io import atomic_write, atomic_write_text
from .recorder import Recorder
from .reading import Run, load_run, read_latest_checkpoint
from .rundir import RunDir
from .writable import writable_folder

__all__ = ["Recorder", "Run", "RunDir", "atomic_write", "atomic_write_text", "load_run", "read_latest_checkpoint",
           "writable_folder"]

"""The package's public surface: a few names at the top level, imported only when used."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import selfstab

SRC = str(Path(selfstab.__file__).resolve().parents[1])

# name → the module that defines it (an independent statement of where each public name lives)
PUBLIC = {
    "Objective": "selfstab.problem.objective",
    "load_dataset": "selfstab.problem.data",
    "build_model": "selfstab.problem.models",
    "gd_to_edge": "selfstab.train",
    "track": "selfstab.processes",
    "run": "selfstab.experiment",
    "load_run": "selfstab.records",
    "top_eigenpairs": "selfstab.spectrum",
}
ERRORS = ["ConfigError", "ConvergenceError", "DataError", "DivergenceError", "SelfstabError"]


def _has_run() -> bool:
    # selfstab.run is selfstab.experiment.run, written separately; test it once it exists
    return hasattr(importlib.import_module("selfstab.experiment"), "run")


def test_import_selfstab_loads_nothing_heavy():
    code = ("import sys, json, selfstab; "
            "before = sorted(m for m in ('torch', 'scipy', 'matplotlib', 'numpy', 'pandas', 'h5py') if m in sys.modules); "
            "selfstab.Objective; "
            "print(json.dumps([before, 'torch' in sys.modules, 'matplotlib' in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    before, torch_after, mpl_after = json.loads(proc.stdout)
    assert before == []              # nothing until a name is used ...
    assert torch_after and not mpl_after   # ... then only what that name needs


def test_public_names_are_the_submodules_objects():
    assert set(selfstab.__all__) == set(PUBLIC) | set(ERRORS)
    assert set(selfstab.__all__) <= set(dir(selfstab))
    for name, module in PUBLIC.items():
        if name == "run" and not _has_run():
            continue
        assert getattr(selfstab, name) is getattr(importlib.import_module(module), name), name
    from selfstab import errors
    for name in ERRORS:
        assert getattr(selfstab, name) is getattr(errors, name)
    assert issubclass(selfstab.ConfigError, selfstab.SelfstabError)


def test_from_selfstab_import_names_and_star():
    from selfstab import Objective, load_run, top_eigenpairs  # noqa: F401
    assert callable(top_eigenpairs) and callable(load_run)
    if _has_run():
        namespace = {}
        exec("from selfstab import *", namespace)
        assert set(selfstab.__all__) <= set(namespace)


@pytest.mark.parametrize("name,module", [("Lockstep", "selfstab.processes.lockstep"),
                                         ("gd_run", "selfstab.train.schedule"),
                                         ("EigenTracker", "selfstab.spectrum.sharpness"),
                                         ("sharpness_gradient", "selfstab.spectrum")])
def test_everything_else_stays_in_its_submodule(name, module):
    assert name not in selfstab.__all__
    with pytest.raises(AttributeError, match=name):
        getattr(selfstab, name)
    assert getattr(importlib.import_module(module), name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        selfstab.nonsense  # noqa: B018
    assert not hasattr(selfstab, "nonsense")

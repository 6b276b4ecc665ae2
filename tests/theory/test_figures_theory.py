"""``selfstab theory …`` writes non-empty PNG and PDF figures; the figures have the panels they should."""

import numpy as np
import pytest

from selfstab.cli.main import main
from selfstab.figures.theory import four_stages_figure, ode_orbits_figure, scale_invariance_figure
from selfstab.theory import integrate_ode, scale_invariance_experiment, simplified_dynamics


def _check_files(out, names):
    for name in names:
        png, pdf = out / f"{name}.png", out / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_fig2_command(tmp_path, capsys):
    assert main(["theory", "fig2", "--out", str(tmp_path), "--steps", "700"]) == 0
    _check_files(tmp_path, ["fig2_four_stages"])
    assert (tmp_path / "fig2_four_stages.csv").stat().st_size > 0
    assert str(tmp_path / "fig2_four_stages.png") in capsys.readouterr().out


def test_fig3_command(tmp_path, capsys):
    assert main(["theory", "fig3", "--out", str(tmp_path), "--x0", "0.1", "0.5", "--alpha", "2"]) == 0
    _check_files(tmp_path, ["fig3_ode_orbits"])
    assert "fig3_ode_orbits.pdf" in capsys.readouterr().out


def test_scale_invariance_command(tmp_path, capsys):
    assert main(["theory", "scale-invariance", "--out", str(tmp_path), "--steps", "150"]) == 0
    _check_files(tmp_path, ["scale_invariance"])
    out = capsys.readouterr().out
    assert "no edge reached" in out and "scale_invariance.png" in out


@pytest.mark.parametrize("argv", [["theory", "--help"], ["theory", "fig2", "--help"], ["theory", "fig3", "--help"],
                                  ["theory", "scale-invariance", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: selfstab theory" in capsys.readouterr().out


def test_bare_theory_prints_help_and_fails(capsys):
    assert main(["theory"]) == 2
    assert "fig2" in capsys.readouterr().out


def test_bad_parameter_is_one_line_error(tmp_path, capsys):
    assert main(["theory", "fig2", "--out", str(tmp_path), "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfstab theory: error:") and err.count("\n") == 1


def test_number_of_axes():
    import matplotlib.pyplot as plt

    x, y = simplified_dynamics(1.0, 1.0, 0.01, 0.1, 0.0, 300)
    fig = four_stages_figure(x, y, x ** 2 / 0.01, lr=0.01, alpha=1.0, beta=1.0)
    assert len(fig.axes) == 3
    assert all(ax.get_xlabel() or ax.get_ylabel() for ax in fig.axes)
    orb = integrate_ode(1.0, 1.0, 0.2, 0.0, n_periods=1)
    fig3 = ode_orbits_figure([(0.2, orb.X, orb.Y)], (orb.X, orb.Y), alpha=1.0, beta=1.0)
    assert len(fig3.axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig3.axes)
    df = scale_invariance_experiment(steps=20)
    fig_si = scale_invariance_figure(df)
    assert len(fig_si.axes) == 3 and all(ax.get_ylabel() for ax in fig_si.axes)
    assert np.isfinite(df["sharpness"]).all()
    plt.close("all")

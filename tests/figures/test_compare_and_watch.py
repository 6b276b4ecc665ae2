"""Several runs on one report page (key numbers side by side, the combined figures), and ``plot``/``report``
on a run that is still being written (they draw what is recorded and say so)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

import selfstab.report.page as report_mod
from selfstab.cli.main import main
from selfstab.records import load_run
from selfstab.report import key_numbers, status_note, write_report


def _mark(path, status="running", pid=None, host=None):
    """Give the run in ``path`` the status a writer leaves in its summary (pid: this process, alive)."""
    summary = json.loads((path / "summary.json").read_text())
    summary.update(status=status, pid=os.getpid() if pid is None else pid, host=host or socket.gethostname(),
                   heartbeat="2026-01-01T00:00:00+00:00")
    (path / "summary.json").write_text(json.dumps(summary))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def two(make_run, tmp_path):
    return [make_run(tmp_path / "lr0.02", lr=0.02, steps=120), make_run(tmp_path / "lr0.01", lr=0.01, steps=100)]


def test_comparison_page_has_one_column_per_run_and_the_combined_figures(two, tmp_path, monkeypatch):
    drawn = {}
    real = report_mod.png_bytes

    def spy(fig, **kw):   # the figures as drawn, before they become pixels
        drawn[fig.axes[0].get_title(loc="left") if fig.axes else ""] = fig
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        drawn.setdefault("titles", []).append(titles)
        return real(fig, **kw)

    monkeypatch.setattr(report_mod, "png_bytes", spy)
    out = write_report([r.path for r in two])
    assert out == tmp_path / "compare-lr0.02-lr0.01.html"   # named by the runs compared
    text = out.read_text(encoding="utf-8")
    assert "<tr><th></th><th>lr0.02</th><th>lr0.01</th></tr>" in text
    k = [key_numbers(r) for r in two]
    row = re.search(r"<tr><td>tracked steps</td>(.*?)</tr>", text).group(1)
    assert row == f"<td>{k[0]['tracked_steps']}</td><td>{k[1]['tracked_steps']}</td>" == "<td>120</td><td>100</td>"
    row = re.search(r"<tr><td>learning rate η</td>(.*?)</tr>", text).group(1)
    assert row == "<td>0.02</td><td>0.01</td>"
    # the config keys that differ: η (lr) and track.steps, nothing else
    diffs = re.search(r"<h2>Config differences</h2>\n<table>(.*?)</table>", text, re.S).group(1)
    assert re.findall(r"<tr><td>([a-z_.]+)</td>", diffs) == ["lr", "track.steps"]
    # the combined figures: 4 (and its zoom) and 6, each with one row per run (sorted by η)
    assert re.findall(r'<figure id="([a-z0-9_]+)">', text) == ["figure4", "figure4_zoom", "figure6"]
    fig4_rows = [t for t in drawn["titles"][0] if t]
    assert len(fig4_rows) == 2 and "0.01" in fig4_rows[0] and "0.02" in fig4_rows[1]
    assert text.count("data:image/png;base64,") == 3 and 'id="figure1"' not in text   # per-run figures: no


def test_comparison_in_markdown_from_the_command_line(two, tmp_path, make_run, capsys):
    untracked = make_run(tmp_path / "trained", lr=0.015, processes=("train",))
    assert main(["report", str(two[0].path), str(two[1].path), str(untracked.path),
                 "--out", str(tmp_path / "cmp" / "c.md")]) == 0
    assert f"wrote {tmp_path / 'cmp' / 'c.md'}" in capsys.readouterr().out
    text = (tmp_path / "cmp" / "c.md").read_text(encoding="utf-8")
    assert "| | lr0.02 | lr0.01 | trained |" in text and "| learning rate η | 0.02 | 0.01 | 0.015 |" in text
    assert re.search(r"\| tracked steps \| 120 \| 100 \| \S+ \|", text)
    # the trained-only run has no tracked records: figure 4 leaves it out, with the reason; figure 6 has all three
    assert "- left out of figure 4: figure 4 needs tracked records" in text
    assert sorted(p.name for p in (tmp_path / "cmp").glob("*.png")) == ["c_figure4.png", "c_figure4_zoom.png",
                                                                       "c_figure6.png"]


def test_status_note_for_a_running_a_dead_and_a_finished_run(make_run, tmp_path):
    run = make_run(tmp_path / "r", steps=60)
    assert status_note(load_run(run.path)) is None              # no status, or "finished": nothing to say
    _mark(run.path, "finished")
    assert status_note(load_run(run.path)) is None
    _mark(run.path)
    os.utime(run.path / "records.h5", (1_700_000_000, 1_700_000_000))
    from datetime import datetime
    hhmmss = datetime.fromtimestamp(1_700_000_000).strftime("%H:%M:%S")
    assert status_note(load_run(run.path)) == (f"run is still running (tracking step 60, last written {hhmmss}); "
                                               f"figures show what is recorded so far")
    _mark(run.path, pid=_dead_pid())
    note = status_note(load_run(run.path))
    assert note.startswith("run stopped without finishing (tracking step 60") and f"selfstab resume {run.path}" in note


def test_plot_and_report_on_a_running_run_say_so(make_run, tmp_path, capsys):
    run = make_run(tmp_path / "r", steps=60, processes=("train", "gd", "predicted"))
    _mark(run.path)
    assert main(["plot", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run is still running (tracking step 60, last written ")
    assert "figures show what is recorded so far" in out and (run.path / "figures" / "figure4.png").is_file()
    assert main(["report", str(run.path)]) == 0
    assert capsys.readouterr().out.startswith("run is still running (tracking step 60")
    text = (run.path / "report.html").read_text(encoding="utf-8")
    assert '<p class="status">Run is still running (tracking step 60, last written ' in text
    write_report(run.path, tmp_path / "r.md", fmt="md")
    assert "> **Run is still running (tracking step 60" in (tmp_path / "r.md").read_text(encoding="utf-8")


def test_plot_while_a_real_run_is_being_written(tmp_path, capsys):
    """A real `selfstab run` flushing every 0.2 s: plot it mid-way, then kill it (its status stays "running")."""
    import signal
    import time

    out = tmp_path / "live"
    env = dict(os.environ, OMP_NUM_THREADS="1", SELFSTAB_FSYNC="0")
    proc = subprocess.Popen([sys.executable, "-m", "selfstab", "run", "--out", str(out), "--track.steps", "5000",
                             "--data.name", "synthetic", "--data.n", "64", "--data.n_test", "32", "--model.width", "8",
                             "--lr", "0.5", "--track.checkpoint_every", "1000", "--track.stop_lambda2", "50",
                             "--flush_seconds", "0.2", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not ((out / "records.h5").exists() and "gd" in load_run(out).records):
            time.sleep(0.2)
        assert proc.poll() is None and load_run(out).running, "the run ended before it could be watched"
        assert main(["plot", str(out), "--figures", "4"]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert re.fullmatch(r"run is still running \(tracking step \d+, last written \d\d:\d\d:\d\d\); "
                            r"figures show what is recorded so far", first), first
        assert (out / "figures" / "figure4.png").is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = load_run(out)
    assert run.summary["status"] == "running" and not run.running
    assert status_note(run).startswith("run stopped without finishing (tracking step ")


def test_figure4_of_a_run_one_tracked_step_in(tmp_path):
    """What plot sees right after tracking starts: one GD row, so no two-step average of the sharpness yet."""
    from selfstab.figures.paper import make_figure4
    from selfstab.records import RunDir

    rd = RunDir.create(tmp_path / "r", {"lr": 0.5})
    rd.recorder("gd").append(0, loss=0.3, sharpness=4.1, sharpness_avg2=None, dist_constrained=0.01)
    rd.flush()
    fig = make_figure4([load_run(rd.path)])
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert any("nothing recorded yet: gd" in t for t in texts), texts
    assert len(fig.axes[0].lines) >= 1   # the loss has its one point


@pytest.mark.parametrize("command, fix", [(["plot"], "use --out DIR to write the figures somewhere else"),
                                          (["report"], "use --out FILE to write the report somewhere else")])
def test_plot_and_report_into_a_read_only_run_name_the_path_and_offer_out(make_run, tmp_path, capsys, monkeypatch,
                                                                         command, fix):
    import errno
    from pathlib import Path

    run = make_run(tmp_path / "r", steps=60, processes=("train",))

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main([*command, str(run.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    where = run.path / "figures" if command == ["plot"] else run.path
    assert err == f"selfstab {command[0]}: error: cannot write {where} (read-only file system); {fix}"


def test_comparing_other_runs_does_not_replace_an_earlier_comparison(make_run, tmp_path, capsys):
    """§4.7: `report A B` then `report A C` wrote both to compare.html, the first silently lost."""
    a, b, c = (make_run(tmp_path / name, lr=lr, steps=40) for name, lr in (("a", 0.02), ("b", 0.01), ("c", 0.015)))
    assert main(["report", str(a.path), str(b.path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'compare-a-b.html'}"
    first = (tmp_path / "compare-a-b.html").read_text(encoding="utf-8")
    assert main(["report", str(a.path), str(c.path)]) == 0
    assert (tmp_path / "compare-a-b.html").read_text(encoding="utf-8") == first
    assert (tmp_path / "compare-a-c.html").is_file()
    assert main(["report", str(a.path), str(b.path)]) == 0   # the same comparison, redone: replaced, and said
    assert "replacing the page written before for the same comparison" in capsys.readouterr().out

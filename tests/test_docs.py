"""The repository documents its theory in docs/theory.md, and the code cites it there.

(a) nothing under ``src/``, ``tests/`` or ``benchmarks/`` names the internal notes SPEC.md / FINDINGS.md or a
    folder outside the repository (``../shared``);
(b) every ``docs/theory.md §n`` cited under ``src/``, ``tests/`` or ``benchmarks/`` is a section that exists;
(c) docs/theory.md has its sections §1 … §11, in order;
(d) the README is a user's guide that links docs/results.md (the measured results), and every
    relative link or image in README.md, docs/*.md and benchmarks/RESULTS.md names a file that exists
    and, with ``#anchor``, a heading that exists there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TESTS = ROOT / "tests"
BENCHMARKS = ROOT / "benchmarks"
THEORY = ROOT / "docs" / "theory.md"
RESULTS = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
README_MAX_LINES = 350
SECTIONS = 11

INTERNAL = re.compile(r"\b(?:SPEC|FINDINGS)(?:\.md)?\b")
OUTSIDE = re.compile(r"(?:\.\./)+shared\b")          # notes beside the checkout, which a reader does not have
HEADING = re.compile(r"^## (§\d+(?:\.\d+)*) ", re.M)
# "docs/theory.md §4", "docs/theory.md §4–§7", "docs/theory.md §2, §8", "``docs/theory.md §11``"
SECTION = r"§\d+(?:\.\d+)*"
CITATION = re.compile(r"docs/theory\.md`{0,2}\s*(" + SECTION + r"(?:\s*(?:[–-]|,|and)\s*§?\d+(?:\.\d+)*)*)")


def source_files() -> list[Path]:
    """Text files of the package (generated metadata and caches excluded)."""
    out = []
    for p in sorted(SRC.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or any(part.endswith(".egg-info") for part in p.parts):
            continue
        if p.suffix in {".py", ".md", ".txt", ".toml", ".cfg", ".json", ".yaml", ".yml", ".rst"}:
            out.append(p)
    return out


def files_under_tests_and_benchmarks() -> list[Path]:
    """The Python and Markdown files under ``tests/`` and ``benchmarks/``, less this file (it names the notes
    it looks for)."""
    here = Path(__file__).resolve()
    return [p for folder in (TESTS, BENCHMARKS) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in {".py", ".md"} and "__pycache__" not in p.parts and p.resolve() != here]


def internal_citations(files: list[Path]) -> list[str]:
    """``path:line: text`` of every line in ``files`` that names SPEC.md, FINDINGS or ``../shared``."""
    return [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
            for p in files for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if INTERNAL.search(line) or OUTSIDE.search(line)]


def missing_sections(files: list[Path]) -> tuple[dict[str, list[str]], int]:
    """The ``docs/theory.md §n`` citations in ``files`` whose section does not exist (section → files), and how
    many citations were read."""
    existing, citations, n = set(headings()), {}, 0
    for p in files:
        for section in cited_sections(p.read_text(encoding="utf-8")):
            citations.setdefault(section, []).append(str(p.relative_to(ROOT)))
            n += 1
    return {s: sorted(set(where)) for s, where in citations.items() if s not in existing}, n


def cited_sections(text: str) -> list[str]:
    """Every section a ``docs/theory.md §…`` citation in ``text`` names; a range ``§a–§b`` names a..b."""
    found = []
    for m in CITATION.finditer(text):
        group = m.group(1)
        parts = re.split(r"\s*(,|and|[–-])\s*", group)
        numbers = [p.lstrip("§") for p in parts[0::2]]
        seps = parts[1::2]
        found.append("§" + numbers[0])
        for sep, prev, cur in zip(seps, numbers, numbers[1:]):
            if sep in "–-" and prev.isdigit() and cur.isdigit():
                found.extend(f"§{k}" for k in range(int(prev) + 1, int(cur)))
            found.append("§" + cur)
    return found


def headings() -> list[str]:
    return HEADING.findall(THEORY.read_text(encoding="utf-8"))


def test_citation_parser_reads_the_forms_used():
    text = ("(docs/theory.md §4–§7) ... (docs/theory.md §2, §8) ... ``docs/theory.md §11`` ... "
            "docs/theory.md §3 and §5 ... docs/theory.md §10.")
    assert cited_sections(text) == ["§4", "§5", "§6", "§7", "§2", "§8", "§11", "§3", "§5", "§10"]
    assert cited_sections("see docs/theory.md for the equations") == []


def test_src_does_not_name_internal_notes():
    files = source_files()
    assert len(files) > 20, "src/ looks empty: is the test looking in the right place?"
    offenders = internal_citations(files)
    assert not offenders, ("cite docs/theory.md §n (and the paper's equation numbers) instead of internal notes:\n"
                           + "\n".join(offenders))


def test_tests_and_benchmarks_do_not_name_internal_notes():
    files = files_under_tests_and_benchmarks()
    assert len(files) > 50 and any(p.parent == BENCHMARKS for p in files), "is the test looking in the right place?"
    offenders = internal_citations(files)
    assert not offenders, ("cite docs/theory.md §n (docs/results.md or benchmarks/RESULTS.md for a measured fact) "
                           "instead of notes that are not in the repository:\n" + "\n".join(offenders))


def test_internal_note_patterns_catch_the_forms_once_used():
    for line in ("see SPEC.md §4", "(FINDINGS)", "as in FINDINGS.md", "../shared/STYLE.md", "../../shared"):
        assert INTERNAL.search(line) or OUTSIDE.search(line), line
    for line in ("selfstab.spectrum", "SPECTRUM", "a shared graph", "shared/ on the device"):
        assert not (INTERNAL.search(line) or OUTSIDE.search(line)), line


def test_theory_sections_are_1_to_11_in_order():
    top = [h for h in headings() if "." not in h]
    assert top == [f"§{k}" for k in range(1, SECTIONS + 1)]


def test_every_cited_section_exists():
    missing, n = missing_sections(source_files())
    assert n >= 5, "too few docs/theory.md citations found under src/: is the parser broken?"
    assert not missing, f"docs/theory.md has no section for these citations: {missing}"


def test_every_section_cited_in_tests_and_benchmarks_exists():
    missing, n = missing_sections(files_under_tests_and_benchmarks())
    assert n >= 5, "too few docs/theory.md citations found under tests/ and benchmarks/: is the parser broken?"
    assert not missing, f"docs/theory.md has no section for these citations: {missing}"


@pytest.mark.parametrize("section", [f"§{k}" for k in range(1, SECTIONS + 1)])
def test_each_section_has_content(section):
    text = THEORY.read_text(encoding="utf-8")
    start = text.index(f"## {section} ")
    nxt = text.find("\n## ", start + 1)
    body = text[start:nxt if nxt >= 0 else len(text)]
    assert len(body.splitlines()) > 5, f"{section} of docs/theory.md is (nearly) empty"


# ----------------------------------------------------------------------------- links between the documents

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def links(path: Path) -> list[str]:
    """Relative link targets outside code blocks (URLs and mail addresses left out)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slug_matches_github():
    assert slug("Several unstable eigenvalues") == "several-unstable-eigenvalues"
    assert slug("The theory, executable") == "the-theory-executable"
    assert slug("At a larger η: several eigenvalues") == "at-a-larger-η-several-eigenvalues"


def test_results_page_exists_and_the_readme_links_it():
    assert RESULTS.is_file(), "docs/results.md holds the measured results the README points to"
    assert "docs/results.md" in links(README)


def test_readme_is_a_guide_not_a_results_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (f"README.md has {n} lines: measured results and tables go to docs/results.md, "
                                   "benchmark tables to benchmarks/RESULTS.md")


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert doc.is_file()
    broken = []
    for target in links(doc):
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_link_checker_sees_links():
    assert len(links(README)) >= 5 and len(links(RESULTS)) >= 5, "too few links found: is the pattern broken?"

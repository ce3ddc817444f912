"""The README and docs/ hold together: every relative link reaches a file (and its #anchor a
heading there, by GitHub's rule for heading ids), every script and result file they name
exists, and the README stays a short door (at most README_MAX_LINES lines)."""

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

SCRIPT = re.compile(r"(?<![\w-])benchmarks/[\w/.-]+\.py\b")
RESULT = re.compile(r"(?<![\w-])benchmarks/results/[\w.-]+\.(?:json|png|md)\b")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)  # a fenced code block
# [text](target) or ![alt](target "title"): the target
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links there are code)."""
    return re.sub(r"(`+).+?\1", "", FENCE.sub("", text), flags=re.S)


def _links(text: str) -> list:
    """The targets of the Markdown links and images in ``text`` (not in code)."""
    return LINK.findall(_prose(text))


def _slug(heading: str) -> str:
    """GitHub's id for a heading: the text as rendered, lower-cased, with every character but
    letters, marks, digits, '_', '-' and spaces dropped, then spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = (c for c in text if c in "- " or unicodedata.category(c)[0] in "LM"
            or unicodedata.category(c) in ("Nd", "Pc"))
    return "".join(kept).replace(" ", "-")


def _anchors(text: str) -> set:
    """The ids of the headings of ``text``; a repeated id gets -1, -2, ... as on GitHub."""
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text), flags=re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _broken(page: Path, text: str) -> list:
    """Each relative link of ``page`` (whose text is ``text``) that reaches no file, or whose
    #anchor is no heading of the Markdown file it reaches: 'target: why'."""
    out = []
    for target in _links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, anchor = unquote(target).partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix != ".md":
            out.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in _anchors(text if dest == page else dest.read_text()):
            out.append(f"{target}: no heading #{anchor} in {dest.name}")
    return out


def _missing(pattern: re.Pattern, text: str, root: Path = ROOT) -> list:
    """The repository paths ``pattern`` finds in ``text`` (code included) that do not exist."""
    return sorted({p for p in pattern.findall(text) if not (root / p).exists()})


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = _broken(page, page.read_text())
    assert not broken, broken


def _lines(text: str) -> int:
    """Lines as an editor numbers them (a last line without a newline counts)."""
    return len(text.splitlines())


def test_the_readme_is_a_short_door():
    n = _lines(README.read_text())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, at most {README_MAX_LINES}"


def test_the_docs_pages_exist_and_the_readme_links_each():
    links = {Path(unquote(t).partition("#")[0]) for t in _links(README.read_text())}
    for name in ("design", "checkpoints", "performance", "gpu", "search"):
        assert (ROOT / "docs" / f"{name}.md").exists(), name
        assert Path("docs") / f"{name}.md" in links, f"README links no docs/{name}.md"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_script_named_exists(page):
    missing = _missing(SCRIPT, page.read_text())
    assert not missing, f"{page.name} names scripts that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_result_file_named_exists(page):
    missing = _missing(RESULT, page.read_text())
    assert not missing, f"{page.name} names result files that do not exist: {missing}"


# -- the checks themselves, on small inputs with known faults


def test_slugs_follow_githubs_rule():
    assert _slug("Checkpoints and reliability") == "checkpoints-and-reliability"
    assert _slug("Threads") == "threads"
    assert _slug("`accel.dev` — measuring tools") == "acceldev--measuring-tools"
    assert _slug("Adam: 1e7 parameters (float32)") == "adam-1e7-parameters-float32"
    assert _slug("Optimizer paths on x²/20 + y²") == "optimizer-paths-on-x20--y"
    assert _slug("see [the GPU page](gpu.md)") == "see-the-gpu-page"
    assert _slug("what on_evaluate does") == "what-on_evaluate-does"
    text = "# A\n## Same\n```\n# not a heading\n```\n### Same ##\n"
    assert _anchors(text) == {"a", "same", "same-1"}


def test_links_in_code_are_not_links():
    text = "[a](x.md) ![fig](y.png)\n```\n[b](in_fence.md)\n```\n`[c](in_span.md)` [d](z.md#h)"
    assert _links(text) == ["x.md", "y.png", "z.md#h"]


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "gpu.md").write_text("# GPU\n## What runs\n")
    (tmp_path / "data.json").write_text("{}")
    page = tmp_path / "README.md"
    text = ("# accel\n## Install\n"
            "[ok](docs/gpu.md) [ok](docs/gpu.md#what-runs) [ok](#install) [ok](data.json) "
            "[ok](docs/) [web](https://example.org/x.md#nowhere)\n"
            "[gone](docs/search.md) [bad anchor](docs/gpu.md#what-ran) [own](#tests) "
            "[into json](data.json#a)\n")
    page.write_text(text)
    assert _broken(page, text) == [
        f"docs/search.md: no file {tmp_path / 'docs' / 'search.md'}",
        "docs/gpu.md#what-ran: no heading #what-ran in gpu.md",
        "#tests: no heading #tests in README.md",
        "data.json#a: an anchor into a file that is not Markdown",
    ]
    # links from a page in docs/ are relative to docs/
    inner = tmp_path / "docs" / "design.md"
    assert _broken(inner, "[up](../data.json) [wrong](data.json)") == [
        f"data.json: no file {tmp_path / 'docs' / 'data.json'}"]


def test_lines_are_counted_as_an_editor_numbers_them():
    assert _lines("a\nb\n") == 2 and _lines("a\nb") == 2 and _lines("a\n\nb\n") == 3
    assert _lines("x\n" * (README_MAX_LINES + 1)) > README_MAX_LINES


def test_a_missing_script_or_result_is_found(tmp_path):
    (tmp_path / "benchmarks" / "speed").mkdir(parents=True)
    (tmp_path / "benchmarks" / "speed" / "clip_cost.py").write_text("")
    (tmp_path / "benchmarks" / "results").mkdir()
    (tmp_path / "benchmarks" / "results" / "clip_cost.json").write_text("{}")
    text = ("`python benchmarks/speed/clip_cost.py --out benchmarks/results` writes "
            "benchmarks/results/clip_cost.json; benchmarks/bench_kernels.py is gone, "
            "and so is [its JSON](../benchmarks/results/bench_kernels.json); "
            "benchmarks/<name>.py is a pattern; see mybenchmarks/x.py\n"
            "```bash\npython benchmarks/speed/adam_roofline.py\n```\n")
    assert _missing(SCRIPT, text, tmp_path) == ["benchmarks/bench_kernels.py",
                                                "benchmarks/speed/adam_roofline.py"]
    assert _missing(RESULT, text, tmp_path) == ["benchmarks/results/bench_kernels.json"]


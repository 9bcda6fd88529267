"""The README and the docs site: a short README whose links resolve, a docs site that builds in strict mode, and the
licence and citation files (unit tier: no model, no benchmark data)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

MAX_README_LINES = 200
# [text](target) and ![alt](target); an optional "title" after the target is dropped.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _relative_targets(text: str) -> list[str]:
    """Every link target in `text` that points into the repository (no URL scheme, not a bare #anchor)."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold commands, not links
    targets = MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)
    return [t for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def test_readme_is_short():
    n = len(_readme().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it to {MAX_README_LINES} and move detail to docs/"


def test_readme_refers_to_nothing_a_reader_cannot_open():
    text = _readme()
    assert "§" not in text, "README.md cites design-note sections (§): say it, or link a page in docs/"
    issues = re.findall(r"(?i)\bissue\s*#|\bissues?\s+\d+", text)
    assert not issues, f"README.md refers to issue numbers: {issues}"
    assert not re.search(r"(?i)session", text), "README.md mentions a 'session': say what was measured instead"


def test_readme_relative_links_exist():
    targets = _relative_targets(_readme())
    assert targets, "no relative links found in README.md (the link pattern is broken?)"
    missing = []
    for target in targets:
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_link_pattern_finds_links():
    found = _relative_targets('see [a](docs/a.md#x), ![f](figures/f.png "t"), [w](https://x.org) and '
                              '<img src="figures/g.png"> [anchor](#top)\n```\n[not](a/link.md)\n```')
    assert found == ["docs/a.md#x", "figures/f.png", "figures/g.png"]


def _mkdocs() -> str | None:
    beside = Path(sys.executable).parent / "mkdocs"
    if beside.exists():
        return str(beside)
    return shutil.which("mkdocs")


def test_docs_build_strict(tmp_path):
    mkdocs = _mkdocs()
    if mkdocs is None:
        pytest.skip("mkdocs is not installed: install the docs extra (pip install -e '.[docs]') to build the site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "Copyright 2026 The refusal workbench authors" in text


def test_citation_cff():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(cff["cff-version"]) == "1.2.0"
    assert cff["type"] == "software"
    assert cff["title"] and cff["authors"] and cff["message"]
    assert cff["license"] == "Apache-2.0"
    preferred = cff["preferred-citation"]
    assert "Surgical, Cheap, and Flexible" in preferred["title"]
    assert preferred["year"] == 2025
    assert [a["family-names"] for a in preferred["authors"]] == ["Wang", "Hu", "Röttger", "Plank"]
    titles = [ref["title"].lower() for ref in cff["references"]]
    assert any("mediated by a single direction" in t for t in titles), titles
    assert any("single vector ablation" in t for t in titles), titles


def test_readme_python_example_uses_the_public_api():
    """The README's Python example names only what `import workbench as wb` exports, with the keywords each function
    takes (it runs on the wired organism in about 3 minutes: not in this tier)."""
    import inspect

    import workbench as wb

    block = re.search(r"```python\n(.*?)```", _readme(), flags=re.DOTALL).group(1)
    used = set(re.findall(r"\bwb\.(\w+)", block))
    assert used and used <= set(wb.__all__), sorted(used - set(wb.__all__))
    for name, keywords in re.findall(r"\bwb\.(\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", block):
        function = getattr(wb, name)
        if inspect.isfunction(function):
            given = set(re.findall(r"(\w+)\s*=(?!=)", keywords))
            assert given <= set(inspect.signature(function).parameters), (name, given)

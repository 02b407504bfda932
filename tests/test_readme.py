"""The documentation stays true to the code: the README's methods table is the trainer registry, every
link and cited test exists, and every config key is documented in exactly one table row."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 250
DOCS = [README, REPO / "DATASETS.md", REPO / "assets" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
KEY_DOCS = [README, REPO / "DATASETS.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
KEY_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)`\s*\|")
RUN_FOLDERS = {"test_new"}  # a run folder of the output tree, not a test
FORBIDDEN = re.compile(r"issue [0-9]|the issue'?s|DESIGN\.md|decision [0-9]", re.IGNORECASE)


def text_outside_code_blocks(path: Path) -> str:
    """The file with its fenced code blocks blanked (links and headings there are not Markdown)."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: Counter[str] = Counter()
    result = set()
    for line in text_outside_code_blocks(path).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        result.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return result


def methods_table_trainers() -> list[str]:
    """The trainer names in the first column of the table under the README's '## Methods'."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Methods")
    names, in_table = [], False
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            in_table = True
            cell = line.split("|")[1].strip()
            match = re.fullmatch(r"`(\w+)`", cell)
            if match:
                names.append(match.group(1))
        elif in_table:
            break
    return names


# Run in a fresh interpreter: tests register config keys of their own in the pytest process, and only the
# shipped packages' keys are documented.
SHIPPED_KEYS = """
import json
import datasets, trainers  # register the dataset and method keys
from dassl.config import all_keys, get_cfg_default
print(json.dumps(all_keys(get_cfg_default())))
"""


def config_keys() -> set[str]:
    """Every leaf key of the default config with the shipped packages' extensions registered."""
    result = subprocess.run([sys.executable, "-c", SHIPPED_KEYS], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; the front door stays <= {MAX_README_LINES}"


def test_methods_table_lists_exactly_the_registered_trainers() -> None:
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    listed = methods_table_trainers()
    assert len(listed) == len(set(listed)), f"a trainer is listed twice: {listed}"
    # Tests register trainers of their own in the same process: the shipped ones live in the trainers package.
    shipped = [n for n in TRAINER_REGISTRY.registered_names() if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")]
    assert sorted(listed) == sorted(shipped)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files_and_headings(doc: Path) -> None:
    broken = []
    for target in LINK.findall(text_outside_code_blocks(doc)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading '#{anchor}' in {path.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_every_cited_test_exists() -> None:
    tests_dir = REPO / "tests"
    defined = {path.name: set(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE))
               for path in tests_dir.glob("test_*.py")}
    everywhere = set().union(*defined.values())
    missing = []
    for doc in DOCS:
        for span in CODE_SPAN.findall(doc.read_text(encoding="utf-8")):
            qualified = re.fullmatch(r"(test_\w+\.py)::(test_\w+)", span)
            if qualified and qualified.group(2) not in defined.get(qualified.group(1), set()):
                missing.append(span)
            elif re.fullmatch(r"test_\w+", span) and span not in everywhere | RUN_FOLDERS:
                missing.append(span)
            elif re.fullmatch(r"tests/test_\w+\.py", span) and not (REPO / span).is_file():
                missing.append(span)
    assert not missing, f"documented tests that do not exist: {missing}"


def test_every_config_key_is_documented_in_exactly_one_table_row() -> None:
    keys = config_keys()
    rows: Counter[str] = Counter()
    for doc in KEY_DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            match = KEY_ROW.match(line)
            if match and ("." in match.group(1) or match.group(1) in keys):
                rows[match.group(1)] += 1
    undocumented = sorted(keys - set(rows))
    twice = sorted(key for key, count in rows.items() if count > 1)
    stale = sorted(set(rows) - keys)
    assert not undocumented, f"config keys without a row in docs/CONFIG.md or docs/METHODS.md: {undocumented}"
    assert not twice, f"config keys documented in more than one row: {twice}"
    assert not stale, f"documented keys the config does not have: {stale}"


def test_no_markdown_file_points_outside_the_repository() -> None:
    offenders = []
    for doc in sorted(REPO.rglob("*.md")):
        if {".git", ".venv", "node_modules"} & set(doc.relative_to(REPO).parts):
            continue
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{doc.relative_to(REPO)}:{number}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)

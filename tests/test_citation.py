"""The licence and citation files say what pyproject.toml says: MIT, the same version, the GOPro paper to cite."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_license_and_citation_match_the_package_metadata() -> None:
    # read by pattern: tomllib is not in Python 3.10, which pyproject.toml still allows
    pyproject = (REPO / "pyproject.toml").read_text()
    license_name = re.search(r'^license = \{ text = "([^"]+)" \}$', pyproject, re.M)[1]
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.M)[1]
    assert license_name == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["license"] == license_name and citation["version"] == version
    paper = citation["preferred-citation"]
    assert paper["title"].startswith("GOPro: Generate and Optimize Prompts in CLIP")
    assert [a["family-names"] for a in paper["authors"]] == ["Singha", "Jha", "Banerjee"] and paper["year"] == 2023

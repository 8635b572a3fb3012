"""The two committed studies (label curve, recipe comparison), migrated to the experiment engine:
their plans match their specs, their reports regenerate from the committed summaries exactly,
with the numbers the engines they replaced reported, and an altered old summary is refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from wav2vec2_lite.experiments.plan import load_spec_and_plan
from wav2vec2_lite.experiments.report import report_markdown
from wav2vec2_lite.experiments.spec import ExperimentError
from wav2vec2_lite.experiments.summaries import load_summaries

pytest.importorskip("scipy")

STUDIES = Path(__file__).resolve().parents[1] / "experiments"


def _tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every markdown table as a list of rows, each row a {header: cell} dict."""
    tables, block = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip("|").split("|")])
        elif block:
            header, rows = block[0], [r for r in block[1:] if not set("".join(r)) <= set("- ")]
            tables.append([dict(zip(header, r)) for r in rows])
            block = []
    return tables


def _rename(name: str) -> str:
    """Old run ids and headers in the engine's terms."""
    return {"arm": "variant"}.get(name, re.sub(r"^(\w+)-s(\d)$", r"\1-p\2", name))


@pytest.mark.parametrize("study", ["label_curve", "pretrain_compare"])
def test_a_migrated_study_regenerates_its_report_with_the_old_engines_numbers(study):
    plan, _ = load_spec_and_plan(STUDIES / study / "spec.yaml")
    summaries = load_summaries(plan)
    assert len(summaries) == len(plan["runs"])  # every old summary read as migrated, none stale
    text, data = report_markdown(plan)
    committed = (STUDIES / study / "report.md").read_text()
    assert committed.startswith(text) and committed[len(text) :].strip() in (
        "",
        "![fine-tuning curve](curve.png)",
    )

    old = _tables((STUDIES / study / "legacy" / "report.md").read_text())
    new_rows = {}
    for table in _tables(text):
        for row in table:
            first = next(iter(row))
            new_rows.setdefault((first, row[first], row.get("labeled")), []).append(row)
    compared = 0
    for table in old:
        for row in table:
            first = next(iter(row))
            key = (_rename(first), _rename(row[first]), row.get("labeled"))
            matches = [r for r in new_rows.get(key, []) if all(_rename(h) in r for h in row)]
            assert matches, f"{study}: no row {key} in the regenerated report"
            cells = {_rename(h): _rename(v) for h, v in row.items()}
            assert any(all(r[h] == v for h, v in cells.items()) for r in matches), (cells, matches)
            compared += len(cells)
    assert compared > (200 if study == "label_curve" else 30)


def test_an_altered_old_summary_is_refused_not_mixed_in(tmp_path):
    study = tmp_path / "pretrain_compare"
    shutil.copytree(STUDIES / "pretrain_compare", study)
    plan, _ = load_spec_and_plan(study / "spec.yaml")
    assert len(load_summaries(plan)) == 7
    path = study / "runs" / "best_rq-p1.json"
    s = json.loads(path.read_text())
    s["best_layer"]["valid_cer"] = 0.1
    path.write_text(json.dumps(s))
    with pytest.raises(ExperimentError, match="does not record as it is"):
        load_summaries(plan)

"""One JSON summary per finished run, and the reader that refuses stale ones.

A summary records its run's config (config name and overrides); one whose config differs from
the plan's run of the same id was made under another plan and is refused, not mixed in.
Summaries written by the two engines this one replaced (the label curve's and the pretraining
comparison's) are read through the study's ``migration.json``: it lists each such file with its
sha256 and the config keys renamed since, so an old summary is accepted only as it was migrated.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from wav2vec2_lite.experiments.plan import BASELINE
from wav2vec2_lite.experiments.spec import ExperimentError
from wav2vec2_lite.serialization import file_sha256
from wav2vec2_lite.train.config import migrate_override

__all__ = ["load_summaries", "summary_path", "sealed_path", "read_sealed", "test_scores_path"]

RUN_FORMAT = "wav2vec2_lite.experiment.run/1"
MIGRATION_FORMAT = "wav2vec2_lite.experiment.migration/1"
LEGACY_TEST = "wav2vec2_lite.label_curve.test/1"


def summary_path(plan: dict, run_id: str) -> Path:
    results = Path(plan["results_dir"])
    return results / ("baseline.json" if run_id == BASELINE else f"runs/{run_id}.json")


def sealed_path(plan: dict, run_id: str) -> Path:
    return Path(plan["results_dir"]) / "sealed" / f"{run_id}.json.gz"


def test_scores_path(plan: dict) -> Path:
    return Path(plan["results_dir"]) / "test_scores.json"


def read_sealed(plan: dict, run_id: str) -> dict | None:
    """A run's sealed test transcripts (for scoring test only), or None."""
    path = sealed_path(plan, run_id)
    return json.loads(gzip.decompress(path.read_bytes())) if path.is_file() else None


def load_migration(plan: dict) -> dict | None:
    path = Path(plan["results_dir"]) / "migration.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    if m.get("format") != MIGRATION_FORMAT:
        raise ExperimentError(f"{path}: not a migration record (format {m.get('format')!r})")
    return m


def from_legacy(summary: dict, run: dict) -> dict:
    """An old engine's summary in this engine's terms (ids, field names, today's config keys)."""
    s = dict(summary) | {"legacy_format": summary.get("format"), "legacy_id": summary.get("id")}
    s |= {"format": RUN_FORMAT, "id": run["id"], "kind": run["kind"]}
    if run["kind"] == "finetune":
        s |= {
            "variant": s.pop("arm"),
            "checkpoint": s.pop("pretrain"),
            "checkpoint_path": s.pop("pretrain_path"),
        }
    elif run["kind"] == "pretrain":
        s["checkpoint"] = run["checkpoint"]
    if "overrides" in s:
        s["overrides"] = [migrate_override(o) for o in s["overrides"]]  # today's config keys
    return s


def _legacy_ok(path: Path, results: Path, migration: dict | None) -> bool:
    if migration is None:
        return False
    rel = path.relative_to(results).as_posix()
    return migration.get("files", {}).get(rel) == file_sha256(path)


def load_summaries(plan: dict) -> dict[str, dict]:
    """The plan's finished runs' summaries, by id. One made under another config than the plan's
    run (or an old engine's summary not recorded, as it is, in ``migration.json``) is an error."""
    results, migration = Path(plan["results_dir"]), load_migration(plan)
    out = {}
    for run in plan["runs"]:
        path = summary_path(plan, run["id"])
        if not path.is_file():
            continue
        try:
            s = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ExperimentError(f"{path}: not valid JSON ({e}); remove it to redo the run") from None
        if s.get("format") != RUN_FORMAT:
            if not _legacy_ok(path, results, migration):
                raise ExperimentError(
                    f"{path}: a summary of format {s.get('format')!r} that {results}/migration.json does "
                    f"not record as it is; remove it to redo the run"
                )
            s = from_legacy(s, run)
        if run["kind"] in ("pretrain", "finetune"):
            config = (s.get("overrides"), s.get("config_name", run["config_name"]))
            same = config == (run["overrides"], run["config_name"])
        else:
            same = s.get("kind") == run["kind"] and s.get("checkpoint_path") == run.get("checkpoint_path")
        if run["kind"] != "finetune" and plan["spec"]["probe"] is not None and run.get("probe", True):
            protocol = dict(plan["spec"]["probe"]["protocol"])
            if run["kind"] != BASELINE:
                protocol.update(random_init_seeds=0, log_mel=False)
            same = same and s.get("probe_protocol") == protocol
        if not same:
            raise ExperimentError(
                f"{path}: made under another config than the plan's run {run['id']} (was the plan amended "
                f"after it ran?); remove it to redo that run"
            )
        out[run["id"]] = s
    return out

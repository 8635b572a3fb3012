"""Choices on valid and the one scoring of test: the chosen runs only, overall and by sentence kind,
from the run folder or (once it is gone) the test transcripts sealed when the run finished."""

from __future__ import annotations

import json
from pathlib import Path

from wav2vec2_lite.asr import evaluate
from wav2vec2_lite.experiments import summaries as stored
from wav2vec2_lite.experiments.plan import write_json
from wav2vec2_lite.experiments.runs import now_iso
from wav2vec2_lite.experiments.spec import ExperimentError
from wav2vec2_lite.experiments.summaries import load_summaries, read_sealed, sealed_path, test_scores_path
from wav2vec2_lite.serialization import file_sha256

__all__ = ["choose_on_valid", "score_test", "load_test_scores"]

TEST_FORMAT = "wav2vec2_lite.experiment.test/1"
ROW_KEYS = ("id", "variant", "subset", "minutes", "checkpoint", "seed", "trial", "lr", "lr_scale")


def choose_on_valid(plan: dict, summaries: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """(the chosen fine-tuning summaries, the cells whose trials are not all summarized yet): per
    variant × size × pretraining seed × fine-tuning seed, the trial whose best checkpoint has the
    lowest valid CER (ties: WER, then the earlier trial)."""
    groups: dict[tuple, list[dict]] = {}
    for run in plan["runs"]:
        if run["kind"] == "finetune":
            groups.setdefault((run["variant"], run["subset"], run["checkpoint"], run["seed"]), []).append(run)
    chosen, incomplete = [], []
    for key, runs in groups.items():
        if not all(r["id"] in summaries for r in runs):
            incomplete.append("/".join(str(k) for k in key))
            continue
        tried = [summaries[r["id"]] for r in runs]
        chosen.append(min(tried, key=lambda s: (s["best_valid"]["cer"], s["best_valid"]["wer"], s["trial"])))
    return chosen, incomplete


def score_test(plan: dict) -> Path:
    """Score test once for the runs chosen on valid; the scores file is the refusal marker."""
    marker, summaries = test_scores_path(plan), load_summaries(plan)
    if marker.exists():
        raise ExperimentError(f"test already scored: {marker} exists; the protocol scores test once")
    if plan["spec"]["finetune"] is None:
        raise ExperimentError(
            "this experiment has no fine-tuning: its probes are chosen on valid; test is never read"
        )
    if missing := [r["id"] for r in plan["runs"] if r["id"] not in summaries]:
        raise ExperimentError(
            f"{len(missing)} planned run(s) have no summary yet (e.g. {missing[0]}); test is scored once, "
            f"after every run (see `status`)"
        )
    chosen, _ = choose_on_valid(plan, summaries)
    sealed = {s["id"]: read_sealed(plan, s["id"]) for s in chosen}
    if absent := [
        s["run_dir"] for s in chosen if not Path(s["run_dir"]).is_dir() and sealed[s["id"]] is None
    ]:
        raise ExperimentError(
            f"{len(absent)} chosen run(s) have neither their folder nor sealed test transcripts "
            f"(e.g. {absent[0]})"
        )
    corpus = plan["spec"]["corpus"]
    kinds = evaluate.sentence_kinds(corpus)
    manifest, refs = evaluate.read_references(corpus, "test")
    rows = []
    for s in chosen:
        seal = sealed[s["id"]]
        if Path(s["run_dir"]).is_dir():
            res = evaluate.evaluate_split(s["run_dir"], corpus, "test")
            if seal is not None and seal["hypotheses"] != res.hypotheses:
                raise ExperimentError(
                    f"{sealed_path(plan, s['id'])}: the sealed test transcripts differ from what "
                    f"{s['run_dir']} transcribes now (another checkpoint or corpus?)"
                )
        else:  # the folder is gone: the transcripts sealed when the run finished
            if seal["paths"] != manifest.paths:
                raise ExperimentError(
                    f"{sealed_path(plan, s['id'])}: sealed for another test manifest than {corpus}/test.tsv"
                )
            res = evaluate.score_hypotheses(seal["hypotheses"], refs, seal["paths"], seal["failed"])
        rows.append(
            {k: s[k] for k in ROW_KEYS}
            | {
                "valid_cer": s["best_valid"]["cer"],
                "valid_wer": s["best_valid"]["wer"],
                "test_cer": res.cer,
                "test_wer": res.wer,
                "test_utterances": res.utterances,
                "test_by_kind": {
                    k: {"cer": r.cer, "wer": r.wer, "utterances": r.utterances}
                    for k, r in evaluate.by_kind(res, kinds).items()
                },
            }
        )
    write_json(
        marker, {"format": TEST_FORMAT, "plan_sha256": plan["sha256"], "scored": now_iso(), "chosen": rows}
    )
    return marker


def load_test_scores(plan: dict) -> dict | None:
    """The test scores, or None before test is scored. Scores of an old engine are read as the
    study's ``migration.json`` records them."""
    marker = test_scores_path(plan)
    if not marker.is_file():
        return None
    scores = json.loads(marker.read_text())
    if scores.get("format") == stored.LEGACY_TEST:
        migration = stored.load_migration(plan)
        rel = marker.relative_to(plan["results_dir"]).as_posix()
        if migration is None or migration.get("files", {}).get(rel) != file_sha256(marker):
            raise ExperimentError(
                f"{marker}: old-format test scores not recorded as they are in migration.json"
            )
        rename = {"arm": "variant", "pretrain": "checkpoint"}
        scores["chosen"] = [{rename.get(k, k): v for k, v in r.items()} for r in scores["chosen"]]
        return scores
    if scores.get("plan_sha256") != plan["sha256"]:
        raise ExperimentError(f"{marker}: scored under another plan ({scores.get('plan_sha256', '?')[:12]})")
    return scores

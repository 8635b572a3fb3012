"""The label curve's choices on valid, its one test scoring and its report.

* :func:`choose_on_valid` — per arm × size × pretraining seed × fine-tuning seed, the lr trial
  with the best valid CER (the run's best checkpoint, which the trainer keeps by valid CER;
  ties: WER, then the earlier trial).
* :func:`score_test` — scores ``test`` once, for the chosen runs only (their best checkpoints),
  overall and by sentence kind; writes ``RESULTS/test_scores.json`` and refuses to run when it
  exists.
* :func:`write_report` — ``RESULTS/report.md`` (per-run values, mean, median, the
  pretrained/scratch CER ratio with a two-level bootstrap CI, Welch's t, blank-collapse rates,
  CER by sentence kind) and ``RESULTS/label_curve.png`` (CER vs labeled minutes, log x, CI bands).
  Before test is scored it reports valid CER and says so.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from wav2vec2_lite.asr.evaluate import (
    by_kind,
    evaluate_split,
    read_references,
    score_hypotheses,
    sentence_kinds,
)
from wav2vec2_lite.tools.label_curve import (
    load_summaries,
    now_iso,
    read_sealed,
    sealed_path,
    test_marker,
    write_json,
)
from wav2vec2_lite.tools.label_curve_spec import ARMS, TOPLINE, LabelCurveError
from wav2vec2_lite.tools.stats import bootstrap_mean_ci, bootstrap_ratio_ci, median, welch_t

__all__ = [
    "choose_on_valid",
    "score_test",
    "load_test_scores",
    "write_report",
    "report_markdown",
    "plot_curve",
]

TEST_FORMAT = "wav2vec2_lite.label_curve.test/1"
# the corpus's sentence kinds (corpus/build.py, utterances.jsonl)
KIND_NAMES = {"domain": "domain (closed-domain commands)", "general": "general (open sentences)"}


def choose_on_valid(plan: dict, summaries: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """(the chosen summaries, the keys whose trials are not all summarized yet)."""
    groups: dict[tuple, list[dict]] = {}
    for run in plan["runs"]:
        groups.setdefault((run["arm"], run["subset"], run["pretrain"], run["seed"]), []).append(run)
    chosen, incomplete = [], []
    for key, runs in groups.items():
        if not all(r["id"] in summaries for r in runs):
            incomplete.append("/".join(str(k) for k in key))
            continue
        tried = [summaries[r["id"]] for r in runs]
        chosen.append(min(tried, key=lambda s: (s["best_valid"]["cer"], s["best_valid"]["wer"], s["trial"])))
    return chosen, incomplete


def score_test(plan: dict) -> Path:
    """Score test once for the runs chosen on valid; the results file is the refusal marker."""
    marker = test_marker(plan)
    if marker.exists():
        raise LabelCurveError(
            f"test already scored: {marker} exists; the protocol scores test once (its numbers are "
            f"in that file, `report` reads them)"
        )
    summaries = load_summaries(plan)
    missing = [r["id"] for r in plan["runs"] if r["id"] not in summaries]
    if missing:
        raise LabelCurveError(
            f"{len(missing)} planned run(s) have no summary yet (e.g. {missing[0]}); test is scored "
            f"once, after every run (see `status`)"
        )
    chosen, _ = choose_on_valid(plan, summaries)
    sealed = {s["id"]: read_sealed(plan, s["id"]) for s in chosen}
    absent = [s["run_dir"] for s in chosen if not Path(s["run_dir"]).is_dir() and sealed[s["id"]] is None]
    if absent:
        raise LabelCurveError(
            f"{len(absent)} chosen run(s) have neither their folder nor sealed test transcripts "
            f"(e.g. {absent[0]}); test needs one of them"
        )
    corpus = plan["spec"]["corpus"]
    kinds = sentence_kinds(corpus)
    manifest, refs = read_references(corpus, "test")
    rows = []
    for s in chosen:
        seal = sealed[s["id"]]
        if Path(s["run_dir"]).is_dir():
            res = evaluate_split(s["run_dir"], corpus, "test")
            if seal is not None and seal["hypotheses"] != res.hypotheses:
                raise LabelCurveError(
                    f"{sealed_path(plan, s['id'])}: the sealed test transcripts differ from what "
                    f"{s['run_dir']} transcribes now (another checkpoint or corpus?)"
                )
        else:  # the folder is gone: the transcripts sealed when the run finished
            if seal["paths"] != manifest.paths:
                raise LabelCurveError(
                    f"{sealed_path(plan, s['id'])}: sealed for another test manifest than {corpus}/test.tsv"
                )
            res = score_hypotheses(seal["hypotheses"], refs, seal["paths"], seal["failed"])
        rows.append(
            {
                k: s[k]
                for k in ("id", "arm", "subset", "minutes", "pretrain", "seed", "trial", "lr", "lr_scale")
            }
            | {
                "valid_cer": s["best_valid"]["cer"],
                "valid_wer": s["best_valid"]["wer"],
                "test_cer": res.cer,
                "test_wer": res.wer,
                "test_utterances": res.utterances,
                "test_by_kind": {
                    k: {"cer": r.cer, "wer": r.wer, "utterances": r.utterances}
                    for k, r in by_kind(res, kinds).items()
                },
            }
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        marker, {"format": TEST_FORMAT, "plan_sha256": plan["sha256"], "scored": now_iso(), "chosen": rows}
    )
    return marker


def load_test_scores(plan: dict) -> dict | None:
    marker = test_marker(plan)
    if not marker.is_file():
        return None
    scores = json.loads(marker.read_text())
    if scores.get("plan_sha256") != plan["sha256"]:
        raise LabelCurveError(f"{marker}: scored under another plan ({scores.get('plan_sha256', '?')[:12]})")
    return scores


# ----------------------------------------------------------------------------- tables
def _rows(plan: dict) -> tuple[list[dict], str, bool]:
    """One row per chosen run with its ``cer`` (test if scored, else best valid)."""
    scores = load_test_scores(plan)
    if scores is not None:
        return [{**r, "cer": r["test_cer"]} for r in scores["chosen"]], "test CER", True
    chosen, _ = choose_on_valid(plan, load_summaries(plan))
    return (
        [
            {
                k: s[k]
                for k in ("id", "arm", "subset", "minutes", "pretrain", "seed", "trial", "lr", "lr_scale")
            }
            | {
                "valid_cer": s["best_valid"]["cer"],
                "valid_wer": s["best_valid"]["wer"],
                "cer": s["best_valid"]["cer"],
            }
            for s in chosen
        ],
        "valid CER (test not scored yet)",
        False,
    )


def _groups(rows: list[dict]) -> list[list[float]]:
    """Values grouped by pretraining seed (one group for the scratch arm)."""
    by: dict = {}
    for r in rows:
        by.setdefault(r["pretrain"], []).append(r["cer"])
    return list(by.values())


def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _trial_name(r: dict) -> str:
    return f"lr {r['lr']:g}" + "".join(f", {k} ×{v:g}" for k, v in r["lr_scale"].items())


def report_markdown(plan: dict) -> tuple[str, dict]:
    """The report's markdown and the curve's numbers (for the plot)."""
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    rows, metric, scored = _rows(plan)
    summaries = load_summaries(plan)
    B, seed = proto["bootstrap_resamples"], proto["bootstrap_seed"]
    sizes = [(s["subset"], s["minutes"]) for s in spec["sizes"]]
    lines = [
        f"# Label curve `{spec['name']}`: {metric}",
        "",
        f"Plan `{plan['sha256'][:12]}`: {len(summaries)} of {len(plan['runs'])} runs summarized; "
        + (
            "test scored once (`test_scores.json`)."
            if scored
            else "**test not scored yet**: every CER below is the "
            "best valid CER of the trial chosen on valid."
        ),
        (
            f"Protocol: ≥ {proto['min_seeds']} fine-tuning seeds, ≥ {proto['min_trials']} lr trials per arm, "
            f"≥ {proto['min_pretrain_seeds']} pretraining seeds at "
            f"{', '.join(proto['min_pretrain_seeds_at'])}; "
            f"trial chosen per arm × size × pretraining seed × fine-tuning seed by best valid CER. "
            f"CIs: percentile bootstrap, {B} resamples, seed {seed}; two-level for the pretrained arm "
            f"(pretraining seeds, then fine-tuning seeds within each). "
            f"Blank collapse: final valid output ≥ {100 * proto['collapse_threshold']:.0f} % empty."
        ),
        "",
    ]
    curve: dict = {arm: [] for arm in ARMS}
    lines += [
        f"## {metric} per arm and size",
        "",
        "| arm | labeled | runs | mean % | median % | sd | 95 % CI of the mean "
        "| blank collapse (all runs) | trials chosen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for subset, minutes in sizes + (
        [("unlabeled_text", spec["topline"]["minutes"])] if spec.get("topline") else []
    ):
        for arm in ARMS if subset != "unlabeled_text" else (TOPLINE,):
            cell = [r for r in rows if r["arm"] == arm and r["subset"] == subset]
            every = [s for s in summaries.values() if s["arm"] == arm and s["subset"] == subset]
            collapse = f"{sum(s['blank_collapse'] for s in every)} / {len(every)}" if every else "–"
            if not cell:
                lines.append(f"| {arm} | {subset} ({minutes:g} min) | 0 | – | – | – | – | {collapse} | – |")
                continue
            vals = [r["cer"] for r in cell]
            lo, hi = bootstrap_mean_ci(_groups(cell), B, seed) if len(vals) > 1 else (math.nan, math.nan)
            sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
            picks: dict[str, int] = {}
            for r in cell:
                picks[_trial_name(r)] = picks.get(_trial_name(r), 0) + 1
            ci = f"{_pct(lo)}–{_pct(hi)}" if math.isfinite(lo) else "–"
            lines.append(
                f"| {arm} | {subset} ({minutes:g} min) | {len(vals)} | {_pct(statistics.mean(vals))} | "
                f"{_pct(median(vals))} | {_pct(sd)} | {ci} | {collapse} | "
                + "; ".join(f"{k} ×{n}" for k, n in picks.items())
                + " |"
            )
            if arm in curve:
                curve[arm].append((minutes, statistics.mean(vals), lo, hi, vals))
            else:
                curve[TOPLINE] = statistics.mean(vals)
    lines += [
        "",
        "## Pretrained / scratch",
        "",
        "| labeled | CER ratio of the means | 95 % CI, two-level | 95 % CI, one-level "
        "| Welch t | df | p (two-sided) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for subset, minutes in sizes:
        pre = [r for r in rows if r["arm"] == "pretrained" and r["subset"] == subset]
        scr = [r for r in rows if r["arm"] == "scratch" and r["subset"] == subset]
        if len(pre) < 2 or len(scr) < 2:
            lines.append(f"| {subset} ({minutes:g} min) | – | – | – | – | – | – |")
            continue
        ratio, lo2, hi2 = bootstrap_ratio_ci(_groups(pre), _groups(scr), B, seed, two_level=True)
        _, lo1, hi1 = bootstrap_ratio_ci(_groups(pre), _groups(scr), B, seed, two_level=False)
        w = welch_t([r["cer"] for r in pre], [r["cer"] for r in scr])
        lines.append(
            f"| {subset} ({minutes:g} min) | {ratio:.3f} | {lo2:.3f}–{hi2:.3f} | {lo1:.3f}–{hi1:.3f} | "
            f"{w.t:.3f} | {w.df:.2f} | {w.p:.4g} |"
        )
    lines += [
        "",
        (
            "Welch's t pools the pretrained arm's pretraining seeds (it ignores that level; the two-level CI "
            "does not)."
        ),
        "",
    ]
    if scored:
        kinds = sorted({k for r in rows for k in r.get("test_by_kind", {})})
        if kinds:
            lines += [
                "## Test CER by sentence kind (mean over runs, %)",
                "",
                "| arm | labeled | " + " | ".join(KIND_NAMES.get(k, k) for k in kinds) + " |",
                "| --- | --- |" + " --- |" * len(kinds),
            ]
            for subset, minutes in sizes:
                for arm in ARMS:
                    cell = [r for r in rows if r["arm"] == arm and r["subset"] == subset]
                    if cell:
                        lines.append(
                            f"| {arm} | {subset} ({minutes:g} min) | "
                            + " | ".join(
                                _pct(
                                    statistics.mean(
                                        r["test_by_kind"][k]["cer"] for r in cell if k in r["test_by_kind"]
                                    )
                                )
                                if any(k in r["test_by_kind"] for r in cell)
                                else "–"
                                for k in kinds
                            )
                            + " |"
                        )
            lines.append("")
    lines += [
        "## Per run (chosen on valid)",
        "",
        "| run | trial chosen | valid CER % of each trial | valid CER % | "
        + ("test CER % | test WER % |" if scored else ""),
        "| --- | --- | --- | --- |" + (" --- | --- |" if scored else ""),
    ]
    for r in sorted(rows, key=lambda r: r["id"]):
        stem = r["id"].rsplit("-t", 1)[0]
        each = " / ".join(
            _pct(s["best_valid"]["cer"])
            for _, s in sorted((s["trial"], s) for i, s in summaries.items() if i.rsplit("-t", 1)[0] == stem)
        )
        lines.append(
            f"| {r['id']} | {_trial_name(r)} | {each} | {_pct(r['valid_cer'])} | "
            + (f"{_pct(r['test_cer'])} | {_pct(r['test_wer'])} |" if scored else "")
        )
    return "\n".join(lines) + "\n", {"curve": curve, "metric": metric}


def plot_curve(curve: dict, metric: str, out: Path) -> Path:
    """CER vs labeled minutes (log x), mean line with its CI band per arm, runs as dots."""
    import matplotlib  # optional: matplotlib (plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (plot extra)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange")):
        pts = sorted(curve.get(arm, []))
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [100 * p[1] for p in pts], "o-", color=colour, label=arm)
        ax.fill_between(
            xs,
            [100 * p[2] for p in pts],
            [100 * p[3] for p in pts],
            color=colour,
            alpha=0.2,
            label=f"{arm} 95 % CI",
        )
        for x, *_, vals in pts:
            ax.scatter([x] * len(vals), [100 * v for v in vals], color=colour, s=8, alpha=0.5)
    if isinstance(curve.get(TOPLINE), float):
        ax.axhline(100 * curve[TOPLINE], color="grey", ls="--", label="supervised topline")
    ax.set_xscale("log")
    xs = sorted({p[0] for arm in ARMS for p in curve.get(arm, [])})
    if xs:
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel("labeled minutes (log)")
    ax.set_ylabel(f"{metric} %")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_report(plan: dict) -> list[Path]:
    """``report.md`` and, with matplotlib installed, ``label_curve.png`` under the results folder."""
    results = Path(plan["spec"]["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    text, data = report_markdown(plan)
    written = []
    try:
        written.append(plot_curve(data["curve"], data["metric"], results / "label_curve.png"))
        text += "\n![label curve](label_curve.png)\n"
    except ImportError:
        text += "\n(no plot: matplotlib is not installed; `pip install 'wav2vec2_lite[plot]'`)\n"
    (results / "report.md").write_text(text, encoding="utf-8")
    return [results / "report.md", *written]

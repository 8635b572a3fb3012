"""An experiment's report: ``report.md`` (and ``curve.png``) next to its plan.

* Probes (if measured): per run (wall clock, audio seen, last pretext accuracy, best layer) and per
  variant (best-layer valid CER over pretraining seeds, mean ± sd, bootstrap CI, against the
  random-init baseline and the reference variant), and the variant chosen on valid.
* Fine-tuning (if measured): per variant and label size (test CER once scored, else the valid CER
  of the trial chosen on valid: mean, median, sd, two-level bootstrap CI, blank collapse, trials
  chosen); each variant / the reference as a CER ratio with two-level and one-level bootstrap CIs
  and Welch's t (``scipy.stats``); test CER by sentence kind; every chosen run; the curve.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from wav2vec2_lite.experiments.plan import BASELINE
from wav2vec2_lite.experiments.scoring import ROW_KEYS, choose_on_valid, load_test_scores
from wav2vec2_lite.experiments.spec import TOPLINE, lowered_protocol
from wav2vec2_lite.experiments.summaries import load_migration, load_summaries
from wav2vec2_lite.tools.stats import bootstrap_mean_ci, bootstrap_ratio_ci, median, welch_t

__all__ = ["report_markdown", "write_report", "plot_curve"]

# the synthesized corpus's sentence kinds (corpus/build.py, utterances.jsonl)
KIND_NAMES = {"domain": "domain (closed-domain commands)", "general": "general (open sentences)"}


def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _trial_name(r: dict) -> str:
    return f"lr {r['lr']:g}" + "".join(f", {k} ×{v:g}" for k, v in r["lr_scale"].items())


def _groups(rows: list[dict], key: str = "cer") -> list[list[float]]:
    """Values grouped by pretraining seed (one group for a scratch variant)."""
    by: dict = {}
    for r in rows:
        by.setdefault(r["checkpoint"], []).append(r[key])
    return list(by.values())


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def _header(plan: dict, summaries: dict, scored: bool) -> list[str]:
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    lowered = lowered_protocol(proto)
    lines = [
        f"# Experiment `{spec['name']}`",
        "",
        f"Plan `{plan['sha256'][:12]}`: {len(summaries)} of {len(plan['runs'])} runs summarized"
        + (
            "; test scored once (`test_scores.json`)."
            if scored
            else "; **test not scored yet**: fine-tuning CERs below are valid CERs."
            if spec["finetune"]
            else "; probes only: chosen on valid, test is never read."
        ),
        "Protocol: "
        + (
            f"≥ {proto['min_seeds']} fine-tuning seeds, ≥ {proto['min_trials']} lr trials per variant, "
            if spec["finetune"]
            else ""
        )
        + (
            f"≥ {proto['min_pretrain_seeds']} pretraining seeds per pretrained variant"
            + (f" at {', '.join(proto['min_pretrain_seeds_at'])}" if proto["min_pretrain_seeds_at"] else "")
            if any(v["source"] != "scratch" for v in spec["variants"].values())
            else "no pretrained variant"
        )
        + (
            "; trial chosen per variant × size × pretraining seed × fine-tuning seed by best valid CER"
            if spec["finetune"]
            else "; each checkpoint's best layer chosen on valid"
        )
        + f". CIs: percentile bootstrap, {proto['bootstrap_resamples']} resamples, "
        f"seed {proto['bootstrap_seed']}"
        + (
            "; two-level for pretrained variants (pretraining seeds, then fine-tuning seeds within each). "
            f"Blank collapse: final valid output ≥ {100 * proto['collapse_threshold']:.0f} % empty."
            if spec["finetune"]
            else ". With 2 or 3 seeds a bootstrap CI cannot be wider than the values' range: it understates "
            "the uncertainty, and Welch's p is the more cautious figure."
        ),
    ]
    if lowered:
        lines.append(f"**The spec lowers the protocol's minimums**: {'; '.join(lowered)}.")
    migration = load_migration(plan)
    if migration:
        lines.append(
            f"Migrated: {len(migration['files'])} files from {migration['from']} ({migration['migrated']}); "
            "keys renamed since: "
            + (", ".join(f"{a} → {b}" for a, b in migration["renamed_keys"].items()) or "none")
            + "."
        )
    return [*lines, ""]


def _probe_section(plan: dict, summaries: dict) -> list[str]:
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    probe = spec["probe"]
    base = summaries.get(BASELINE)
    rand_best = min(r["valid_cer"] for r in base["random_init"]) if base else None
    lines = [
        f"## Frozen probes on `{probe['valid']}` (trained on `{probe['train']}`)",
        "",
        "| run | objective | wall min | audio h | last valid pretext accuracy (chance differs by objective) "
        "| best layer | best-layer CER |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    per_variant: dict[str, list[dict]] = {}
    for r in plan["runs"]:
        if r["kind"] not in ("pretrain", "probe"):
            continue
        s = summaries.get(r["id"])
        if s is None:
            lines.append(f"| {r['id']} | – | not run | | | | |")
            continue
        per_variant.setdefault(s["variant"], []).append(s)
        acc = (s.get("final_valid") or {}).get("accuracy")
        lines.append(
            f"| {r['id']} | {s.get('objective', '–')} | {s.get('wall_minutes', '–')} | "
            f"{s.get('hours_of_audio_seen', '–')} | {'–' if acc is None else f'{acc:.3f}'} | "
            f"{s['best_layer']['layer']} | {s['best_layer']['valid_cer']:.3f} |"
        )
    ref = spec["reference"] if spec["reference"] in per_variant else None
    lines += [
        "",
        "| variant | runs | best-layer CER (mean ± sd over seeds) | 95 % CI of the mean | vs random init"
        + (f" | ratio to {ref} (95 % CI) | Welch p |" if ref else " |"),
        "| --- | --- | --- | --- | ---" + (" | --- | --- |" if ref else " |"),
    ]
    means = {}
    B, seed = proto["bootstrap_resamples"], proto["bootstrap_seed"]
    for variant, runs in per_variant.items():
        cers = [s["best_layer"]["valid_cer"] for s in runs]
        means[variant] = statistics.fmean(cers)
        lo, hi = bootstrap_mean_ci([[c] for c in cers], B, seed) if len(cers) > 1 else (math.nan, math.nan)
        same = base is not None and all(
            (s.get("architecture"), s["probe_data"].get("normalize_waves"))
            == (base.get("architecture"), base["probe_data"].get("normalize_waves"))
            for s in runs
        )
        vs = (
            "– (no baseline yet)"
            if base is None
            else f"{means[variant] / rand_best:.2f}×"
            if same
            else "– (the baseline is of another architecture or input normalisation)"
        )
        row = (
            f"| {variant} | {len(runs)} | {_mean_sd(cers)} | "
            + (f"{lo:.3f}–{hi:.3f}" if math.isfinite(lo) else "–")
            + f" | {vs} |"
        )
        if ref:
            other = [s["best_layer"]["valid_cer"] for s in per_variant[ref]]
            if variant == ref or len(cers) < 2 or len(other) < 2:
                row += " – | – |"
            else:
                ratio, rlo, rhi = bootstrap_ratio_ci([[c] for c in cers], [[c] for c in other], B, seed)
                row += f" {ratio:.3f} ({rlo:.3f}–{rhi:.3f}) | {welch_t(cers, other).p:.4g} |"
        lines.append(row)
    if base:
        log_mel = (
            f", log-mel {min(r['valid_cer'] for r in base['log_mel']):.3f}" if base.get("log_mel") else ""
        )
        lines += [
            "",
            f"Baselines (architecture of `{base['architecture_of']}`): random init best layer "
            f"{rand_best:.3f} (mean of seeds {base['random_init_seeds']}){log_mel}.",
        ]
    complete = all(
        len(per_variant.get(n, [])) == len(v["checkpoints"])
        for n, v in spec["variants"].items()
        if v["source"] != "scratch"
    )
    if complete and len(means) > 1:
        order = sorted(means, key=means.get)
        spreads = [
            statistics.stdev([s["best_layer"]["valid_cer"] for s in per_variant[v]]) for v in order[:2]
        ]
        gap = means[order[1]] - means[order[0]]
        lines += [
            "",
            f"Chosen on valid: **{order[0]}** (mean {means[order[0]]:.3f}; "
            f"next {order[1]} {means[order[1]]:.3f})"
            + (
                "."
                if gap > max(spreads)
                else f"; the gap ({gap:.3f}) is within the seed spread ({max(spreads):.3f}): "
                "the seeds do not "
                f"separate them."
            ),
        ]
    else:
        lines += ["", "Not every variant has all its pretraining seeds probed: no choice yet."]
    return [*lines, ""]


def _finetune_rows(plan: dict, summaries: dict) -> tuple[list[dict], str, bool]:
    """One row per chosen run with its ``cer`` (test if scored, else best valid)."""
    scores = load_test_scores(plan)
    if scores is not None:
        return [{**r, "cer": r["test_cer"]} for r in scores["chosen"]], "test CER", True
    chosen, _ = choose_on_valid(plan, summaries)
    rows = [
        {k: s[k] for k in ROW_KEYS}
        | {
            "valid_cer": s["best_valid"]["cer"],
            "valid_wer": s["best_valid"]["wer"],
            "cer": s["best_valid"]["cer"],
        }
        for s in chosen
    ]
    return rows, "valid CER (test not scored yet)", False


def _finetune_section(plan: dict, summaries: dict) -> tuple[list[str], dict]:
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    ft = spec["finetune"]
    rows, metric, scored = _finetune_rows(plan, summaries)
    B, seed = proto["bootstrap_resamples"], proto["bootstrap_seed"]
    sizes = [(s["subset"], s["minutes"]) for s in ft["sizes"]]
    variants = list(spec["variants"])
    lines = [
        f"## Fine-tuning: {metric} per variant and size",
        "",
        "| variant | labeled | runs | mean % | median % | sd | 95 % CI of the mean "
        "| blank collapse (all runs) | trials chosen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    curve: dict = {v: [] for v in variants}
    cells = [(subset, minutes, v) for subset, minutes in sizes for v in variants]
    if ft["topline"]:
        cells.append((ft["topline"]["subset"], ft["topline"]["minutes"], TOPLINE))
    for subset, minutes, variant in cells:
        cell = [r for r in rows if r["variant"] == variant and r["subset"] == subset]
        every = [
            s
            for s in summaries.values()
            if s["kind"] == "finetune" and s["variant"] == variant and s["subset"] == subset
        ]
        collapse = f"{sum(s['blank_collapse'] for s in every)} / {len(every)}" if every else "–"
        if not cell:
            lines.append(f"| {variant} | {subset} ({minutes:g} min) | 0 | – | – | – | – | {collapse} | – |")
            continue
        vals = [r["cer"] for r in cell]
        lo, hi = bootstrap_mean_ci(_groups(cell), B, seed) if len(vals) > 1 else (math.nan, math.nan)
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        picks: dict[str, int] = {}
        for r in cell:
            picks[_trial_name(r)] = picks.get(_trial_name(r), 0) + 1
        ci = f"{_pct(lo)}–{_pct(hi)}" if math.isfinite(lo) else "–"
        lines.append(
            f"| {variant} | {subset} ({minutes:g} min) | {len(vals)} | {_pct(statistics.mean(vals))} | "
            f"{_pct(median(vals))} | {_pct(sd)} | {ci} | {collapse} | "
            + "; ".join(f"{k} ×{n}" for k, n in picks.items())
            + " |"
        )
        if variant == TOPLINE:
            curve[TOPLINE] = statistics.mean(vals)
        else:
            curve[variant].append((minutes, statistics.mean(vals), lo, hi, vals))
    ref = spec["reference"]
    for variant in [v for v in variants if ref and v != ref]:
        lines += [
            "",
            f"## {variant} / {ref}",
            "",
            "| labeled | CER ratio of the means | 95 % CI, two-level | 95 % CI, one-level "
            "| Welch t | df | p (two-sided) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for subset, minutes in sizes:
            a = [r for r in rows if r["variant"] == variant and r["subset"] == subset]
            b = [r for r in rows if r["variant"] == ref and r["subset"] == subset]
            if len(a) < 2 or len(b) < 2:
                lines.append(f"| {subset} ({minutes:g} min) | – | – | – | – | – | – |")
                continue
            ratio, lo2, hi2 = bootstrap_ratio_ci(_groups(a), _groups(b), B, seed, two_level=True)
            _, lo1, hi1 = bootstrap_ratio_ci(_groups(a), _groups(b), B, seed, two_level=False)
            w = welch_t([r["cer"] for r in a], [r["cer"] for r in b])
            lines.append(
                f"| {subset} ({minutes:g} min) | {ratio:.3f} | {lo2:.3f}–{hi2:.3f} | {lo1:.3f}–{hi1:.3f} | "
                f"{w.t:.3f} | {w.df:.2f} | {w.p:.4g} |"
            )
    if ref:
        lines += [
            "",
            "Welch's t pools a variant's pretraining seeds (it ignores that level; "
            "the two-level CI does not).",
        ]
    lines.append("")
    kinds = sorted({k for r in rows for k in r.get("test_by_kind", {})}) if scored else []
    if kinds:
        lines += [
            "## Test CER by sentence kind (mean over runs, %)",
            "",
            "| variant | labeled | " + " | ".join(KIND_NAMES.get(k, k) for k in kinds) + " |",
            "| --- | --- |" + " --- |" * len(kinds),
        ]
        for subset, minutes in sizes:
            for variant in variants:
                cell = [r for r in rows if r["variant"] == variant and r["subset"] == subset]
                if not cell:
                    continue
                means = [
                    _pct(statistics.mean(r["test_by_kind"][k]["cer"] for r in cell if k in r["test_by_kind"]))
                    if any(k in r["test_by_kind"] for r in cell)
                    else "–"
                    for k in kinds
                ]
                lines.append(f"| {variant} | {subset} ({minutes:g} min) | " + " | ".join(means) + " |")
        lines.append("")
    lines += [
        "## Fine-tuning runs chosen on valid",
        "",
        "| run | trial chosen | valid CER % of each trial | valid CER % | "
        + ("test CER % | test WER % |" if scored else ""),
        "| --- | --- | --- | --- |" + (" --- | --- |" if scored else ""),
    ]
    for r in sorted(rows, key=lambda r: r["id"]):
        stem = r["id"].rsplit("-t", 1)[0]
        each = " / ".join(
            _pct(s["best_valid"]["cer"])
            for _, s in sorted(
                (s["trial"], s)
                for i, s in summaries.items()
                if s["kind"] == "finetune" and i.rsplit("-t", 1)[0] == stem
            )
        )
        lines.append(
            f"| {r['id']} | {_trial_name(r)} | {each} | {_pct(r['valid_cer'])} | "
            + (f"{_pct(r['test_cer'])} | {_pct(r['test_wer'])} |" if scored else "")
        )
    return [*lines, ""], {"curve": curve, "metric": metric}


def report_markdown(plan: dict) -> tuple[str, dict | None]:
    """The report's markdown and the fine-tuning curve's numbers (for the plot; None without one)."""
    summaries = load_summaries(plan)
    scored = load_test_scores(plan) is not None
    lines = _header(plan, summaries, scored)
    if plan["spec"]["probe"]:
        lines += _probe_section(plan, summaries)
    data = None
    if plan["spec"]["finetune"]:
        more, data = _finetune_section(plan, summaries)
        lines += more
    return "\n".join(lines), data


def plot_curve(curve: dict, metric: str, out: Path) -> Path:
    """CER vs labeled minutes (log x): each variant's mean with its CI band, runs as dots."""
    import matplotlib  # optional: matplotlib (the plot extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: matplotlib (the plot extra)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    variants = [v for v in curve if v != TOPLINE]
    for variant, colour in zip(variants, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        pts = sorted(curve[variant])
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [100 * p[1] for p in pts], "o-", color=colour, label=variant)
        ax.fill_between(
            xs,
            [100 * p[2] for p in pts],
            [100 * p[3] for p in pts],
            color=colour,
            alpha=0.2,
            label=f"{variant} 95 % CI",
        )
        for x, *_, vals in pts:
            ax.scatter([x] * len(vals), [100 * v for v in vals], color=colour, s=8, alpha=0.5)
    if isinstance(curve.get(TOPLINE), float):
        ax.axhline(100 * curve[TOPLINE], color="grey", ls="--", label="supervised topline")
    ax.set_xscale("log")
    xs = sorted({p[0] for v in variants for p in curve[v]})
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
    """``report.md`` and, with fine-tuning and matplotlib installed, ``curve.png`` next to the plan."""
    results = Path(plan["results_dir"])
    text, data = report_markdown(plan)
    written = []
    if data is not None:
        try:
            written.append(plot_curve(data["curve"], data["metric"], results / "curve.png"))
            text += "\n![fine-tuning curve](curve.png)\n"
        except ImportError:
            text += "\n(no plot: matplotlib is not installed; `pip install 'wav2vec2_lite[plot]'`)\n"
    (results / "report.md").write_text(text, encoding="utf-8")
    return [results / "report.md", *written]

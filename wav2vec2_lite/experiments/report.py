"""An experiment's report: ``report.md`` (and ``curve.png``) next to its plan: probe and fine-tuning
tables per variant with bootstrap CIs, ratios to the reference variant with Welch's t, every chosen
run (section by section in docs/ablations.md, "What report.md shows")."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

from wav2vec2_lite.experiments.plan import BASELINE
from wav2vec2_lite.experiments.scoring import ROW_KEYS, choose_on_valid, load_test_scores
from wav2vec2_lite.experiments.spec import TOPLINE, lowered_protocol
from wav2vec2_lite.experiments.summaries import load_migration, load_summaries
from wav2vec2_lite.tools.stats import bootstrap_mean_ci, bootstrap_ratio_ci, welch_t

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
    spec, proto, ft = plan["spec"], plan["spec"]["protocol"], plan["spec"]["finetune"]
    state = "test scored once (`test_scores.json`)." if scored else "probes only: test is never read."
    if ft and not scored:
        state = "**test not scored yet**: fine-tuning CERs below are valid CERs."
    at = f" at {', '.join(proto['min_pretrain_seeds_at'])}" if proto["min_pretrain_seeds_at"] else ""
    rules = [
        f"≥ {proto['min_seeds']} fine-tuning seeds, ≥ {proto['min_trials']} lr trials per variant"
    ] * bool(ft)
    rules += [f"≥ {proto['min_pretrain_seeds']} pretraining seeds per pretrained variant{at}"]
    rules += ["each checkpoint's best layer chosen on valid"] * bool(spec["probe"])
    rules += [
        "trial chosen per variant × size × pretraining seed × fine-tuning seed by best valid CER"
    ] * bool(ft)
    ci = (
        f"CIs: percentile bootstrap, {proto['bootstrap_resamples']} resamples, seed {proto['bootstrap_seed']}"
    )
    if ft:
        ci += "; two-level for pretrained variants (pretraining seeds, then fine-tuning seeds within each)"
    done = f"Plan `{plan['sha256'][:12]}`: {len(summaries)} of {len(plan['runs'])} runs summarized; {state}"
    lines = [f"# Experiment `{spec['name']}`", "", done, f"Protocol: {'; '.join(rules)}. {ci}."]
    if ft:
        lines[-1] += f" Blank collapse: final valid output ≥ {100 * proto['collapse_threshold']:.0f} % empty."
    seeds = [len(v["checkpoints"]) for v in spec["variants"].values() if v["source"] != "scratch"]
    if min([*seeds, *([len(ft["seeds"])] if ft else [])]) < 4:
        lines.append(
            "With 2 or 3 seeds a bootstrap CI cannot be wider than the values' range: it understates the "
            "uncertainty, and Welch's p is the more cautious figure."
        )
    if lowered := lowered_protocol(proto):
        lines.append(f"**The spec lowers the protocol's minimums**: {'; '.join(lowered)}.")
    migration = load_migration(plan)
    if migration:
        renamed = ", ".join(f"{a} → {b}" for a, b in migration["renamed_keys"].items()) or "none"
        lines.append(
            f"Migrated: {len(migration['files'])} files from {migration['from']} ({migration['migrated']}); "
            f"keys renamed since: {renamed}."
        )
    return [*lines, ""]


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(*header: str) -> list[str]:
    """A markdown table's header and separator lines."""
    return [_row(*header), "|" + " --- |" * len(header)]


def _probe_section(plan: dict, summaries: dict) -> list[str]:
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    base = summaries.get(BASELINE)
    rand_best = min(r["valid_cer"] for r in base["random_init"]) if base else None
    lines = [f"## Frozen probes on `{spec['probe']['valid']}` (trained on `{spec['probe']['train']}`)", ""]
    lines += _table(
        "run", "objective", "wall min", "audio h",
        "last valid pretext accuracy (chance differs by objective)", "best layer", "best-layer CER",
    )  # fmt: skip
    per_variant: dict[str, list[dict]] = {}
    for r in (r for r in plan["runs"] if r["kind"] in ("pretrain", "probe")):
        s = summaries.get(r["id"])
        if s is None:
            lines.append(_row(r["id"], "–", "not run", "", "", "", ""))
            continue
        per_variant.setdefault(s["variant"], []).append(s)
        acc = (s.get("final_valid") or {}).get("accuracy")
        best = s["best_layer"]
        lines.append(_row(
            r["id"], s.get("objective", "–"), s.get("wall_minutes", "–"), s.get("hours_of_audio_seen", "–"),
            "–" if acc is None else f"{acc:.3f}", best["layer"], f"{best['valid_cer']:.3f}",
        ))  # fmt: skip
    ref = spec["reference"] if spec["reference"] in per_variant else None
    head = [
        "variant",
        "runs",
        "best-layer CER (mean ± sd over seeds)",
        "95 % CI of the mean",
        "vs random init",
    ]
    lines += ["", *_table(*head, *([f"ratio to {ref} (95 % CI)", "Welch p"] if ref else []))]
    means, B, seed = {}, proto["bootstrap_resamples"], proto["bootstrap_seed"]
    for variant, runs in per_variant.items():
        cers = [s["best_layer"]["valid_cer"] for s in runs]
        means[variant] = statistics.fmean(cers)
        lo, hi = bootstrap_mean_ci([[c] for c in cers], B, seed) if len(cers) > 1 else (math.nan, math.nan)
        same = base is not None and all(
            (s.get("architecture"), s["probe_data"].get("normalize_waves"))
            == (base.get("architecture"), base["probe_data"].get("normalize_waves"))
            for s in runs
        )
        vs = f"{means[variant] / rand_best:.2f}×" if same else "– (no baseline yet)"
        vs = "– (the baseline is of another architecture or input normalisation)" if base and not same else vs
        cells = [variant, len(runs), _mean_sd(cers), f"{lo:.3f}–{hi:.3f}" if math.isfinite(lo) else "–", vs]
        if ref:
            other = [s["best_layer"]["valid_cer"] for s in per_variant[ref]]
            cells += ["–", "–"]
            if variant != ref and len(cers) > 1 and len(other) > 1:
                ratio, rlo, rhi = bootstrap_ratio_ci([[c] for c in cers], [[c] for c in other], B, seed)
                cells[-2:] = [f"{ratio:.3f} ({rlo:.3f}–{rhi:.3f})", f"{welch_t(cers, other).p:.4g}"]
        lines.append(_row(*cells))
    if base:
        log_mel = (
            f", log-mel {min(r['valid_cer'] for r in base['log_mel']):.3f}" if base.get("log_mel") else ""
        )
        lines += [
            "",
            f"Baselines (architecture of `{base['architecture_of']}`): random init best layer "
            f"{rand_best:.3f} (mean of seeds {base['random_init_seeds']}){log_mel}.",
        ]
    probed = [n for n, v in spec["variants"].items() if v["source"] != "scratch"]
    if len(means) > 1 and all(
        len(per_variant.get(n, [])) == len(spec["variants"][n]["checkpoints"]) for n in probed
    ):
        order = sorted(means, key=means.get)
        spread = max(
            statistics.stdev([s["best_layer"]["valid_cer"] for s in per_variant[v]]) for v in order[:2]
        )
        gap = means[order[1]] - means[order[0]]
        verdict = "." if gap > spread else (
            f"; the gap ({gap:.3f}) is within the seed spread ({spread:.3f}): the seeds do not separate them."
        )  # fmt: skip
        lines += [
            "",
            f"Chosen on valid: **{order[0]}** (mean {means[order[0]]:.3f}; next {order[1]} "
            f"{means[order[1]]:.3f}){verdict}",
        ]
    else:
        lines += ["", "Not every variant has all its pretraining seeds probed: no choice yet."]
    return [*lines, ""]


def _finetune_rows(plan: dict, summaries: dict) -> tuple[list[dict], str, bool]:
    """One row per chosen run with its ``cer`` (test if scored, else best valid)."""
    scores = load_test_scores(plan)
    if scores is not None:
        return [{**r, "cer": r["test_cer"]} for r in scores["chosen"]], "test CER", True
    rows = [
        {k: s[k] for k in ROW_KEYS} | {"valid_cer": b["cer"], "valid_wer": b["wer"], "cer": b["cer"]}
        for s, b in ((s, s["best_valid"]) for s in choose_on_valid(plan, summaries)[0])
    ]
    return rows, "valid CER (test not scored yet)", False


def _finetune_section(plan: dict, summaries: dict) -> tuple[list[str], dict]:
    spec, proto = plan["spec"], plan["spec"]["protocol"]
    ft, variants, ref = spec["finetune"], list(spec["variants"]), spec["reference"]
    rows, metric, scored = _finetune_rows(plan, summaries)
    B, seed = proto["bootstrap_resamples"], proto["bootstrap_seed"]
    sizes = [(s["subset"], s["minutes"]) for s in ft["sizes"]]
    cell_of = lambda v, subset: [r for r in rows if r["variant"] == v and r["subset"] == subset]  # noqa: E731
    lines = [f"## Fine-tuning: {metric} per variant and size", ""]
    lines += _table(
        "variant", "labeled", "runs", "mean %", "median %", "sd", "95 % CI of the mean",
        "blank collapse (all runs)", "trials chosen",
    )  # fmt: skip
    curve: dict = {v: [] for v in variants}
    cells = [(subset, minutes, v) for subset, minutes in sizes for v in variants]
    if ft["topline"]:
        cells.append((ft["topline"]["subset"], ft["topline"]["minutes"], TOPLINE))
    for subset, minutes, variant in cells:
        cell, labeled = cell_of(variant, subset), f"{subset} ({minutes:g} min)"
        key = ("finetune", variant, subset)
        every = [s for s in summaries.values() if (s["kind"], s["variant"], s.get("subset")) == key]
        collapse = f"{sum(s['blank_collapse'] for s in every)} / {len(every)}" if every else "–"
        if not cell:
            lines.append(_row(variant, labeled, 0, "–", "–", "–", "–", collapse, "–"))
            continue
        vals = [r["cer"] for r in cell]
        lo, hi = bootstrap_mean_ci(_groups(cell), B, seed) if len(vals) > 1 else (math.nan, math.nan)
        picks = Counter(_trial_name(r) for r in cell)
        lines.append(_row(
            variant, labeled, len(vals), _pct(statistics.mean(vals)), _pct(statistics.median(vals)),
            _pct(statistics.stdev(vals) if len(vals) > 1 else math.nan),
            f"{_pct(lo)}–{_pct(hi)}" if math.isfinite(lo) else "–", collapse,
            "; ".join(f"{k} ×{n}" for k, n in picks.items()),
        ))  # fmt: skip
        if variant == TOPLINE:
            curve[TOPLINE] = statistics.mean(vals)
        else:
            curve[variant].append((minutes, statistics.mean(vals), lo, hi, vals))
    for variant in [v for v in variants if ref and v != ref]:
        lines += ["", f"## {variant} / {ref}", ""]
        lines += _table(
            "labeled", "CER ratio of the means", "95 % CI, two-level", "95 % CI, one-level", "Welch t", "df",
            "p (two-sided)",
        )  # fmt: skip
        for subset, minutes in sizes:
            a, b = _groups(cell_of(variant, subset)), _groups(cell_of(ref, subset))
            if sum(map(len, a)) < 2 or sum(map(len, b)) < 2:
                lines.append(_row(f"{subset} ({minutes:g} min)", *["–"] * 6))
                continue
            ratio, lo2, hi2 = bootstrap_ratio_ci(a, b, B, seed, two_level=True)
            _, lo1, hi1 = bootstrap_ratio_ci(a, b, B, seed, two_level=False)
            w = welch_t(sum(a, []), sum(b, []))
            lines.append(_row(
                f"{subset} ({minutes:g} min)", f"{ratio:.3f}", f"{lo2:.3f}–{hi2:.3f}", f"{lo1:.3f}–{hi1:.3f}",
                f"{w.t:.3f}", f"{w.df:.2f}", f"{w.p:.4g}",
            ))  # fmt: skip
    if ref:
        lines += [
            "",
            "Welch's t pools a variant's pretraining seeds (it ignores that level; two-level CIs do not).",
        ]
    lines.append("")
    kinds = sorted({k for r in rows for k in r.get("test_by_kind", {})}) if scored else []
    if kinds:
        lines += ["## Test CER by sentence kind (mean over runs, %)", ""]
        lines += _table("variant", "labeled", *(KIND_NAMES.get(k, k) for k in kinds))
        for (subset, minutes), variant in ((size, v) for size in sizes for v in variants):
            if cell := cell_of(variant, subset):
                by_kind = [
                    [r["test_by_kind"][k]["cer"] for r in cell if k in r["test_by_kind"]] for k in kinds
                ]
                means = [_pct(statistics.mean(xs)) if xs else "–" for xs in by_kind]
                lines.append(_row(variant, f"{subset} ({minutes:g} min)", *means))
        lines.append("")
    lines += ["## Fine-tuning runs chosen on valid", ""]
    test_head = ["test CER %", "test WER %"] if scored else []
    lines += _table("run", "trial chosen", "valid CER % of each trial", "valid CER %", *test_head)
    for r in sorted(rows, key=lambda r: r["id"]):
        stem = r["id"].rsplit("-t", 1)[0]
        of_stem = [s for i, s in summaries.items() if i.rsplit("-t", 1)[0] == stem]
        trials = sorted((s["trial"], s["best_valid"]["cer"]) for s in of_stem)
        test = [_pct(r["test_cer"]), _pct(r["test_wer"])] if scored else []
        lines.append(
            _row(r["id"], _trial_name(r), " / ".join(_pct(c) for _, c in trials), _pct(r["valid_cer"]), *test)
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
        xs, mean, lo, hi = ([100 * p[i] if i else p[0] for p in pts] for i in range(4))
        ax.plot(xs, mean, "o-", color=colour, label=variant)
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, label=f"{variant} 95 % CI")
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
    if data is not None and any(data["curve"].values()):  # a curve needs a fine-tuning result
        try:
            written.append(plot_curve(data["curve"], data["metric"], results / "curve.png"))
            text += "\n![fine-tuning curve](curve.png)\n"
        except ImportError:
            text += "\n(no plot: matplotlib is not installed; `pip install 'wav2vec2_lite[plot]'`)\n"
    (results / "report.md").write_text(text, encoding="utf-8")
    return [results / "report.md", *written]

"""The markdown report of a pretraining comparison: per-run and per-variant tables, the
baselines, and the variant chosen on valid (see :mod:`wav2vec2_lite.tools.pretrain_compare`).
"""

from __future__ import annotations

import statistics

__all__ = ["report_markdown"]


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def report_markdown(spec: dict, planned: list[dict], done: dict[str, dict], base: dict | None) -> str:
    """``RESULTS/report.md``'s text: the ``planned`` runs, ``done`` their summaries by id, ``base``
    the baselines' (None before they are probed)."""
    rand_best = min(r["valid_cer"] for r in base["random_init"]) if base else None
    lines = [
        f"# {spec['name']}: pretraining variants read with frozen probes on `{spec['probe']['valid']}`",
        "",
        f"Spec sha256 `{spec['sha256'][:12]}`; {spec['updates']} updates per run, "
        f"{spec['threads_per_run']} thread(s) per run; probes trained on `{spec['probe']['train']}`. "
        "Lower CER is better. Test is not read.",
        "",
        "| run | objective | wall min | audio h "
        "| last valid pretext accuracy (chance differs by objective) | best layer | best-layer CER |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    per_variant: dict[str, list[dict]] = {}
    for r in planned:
        s = done.get(r["id"])
        if s is None:
            lines.append(f"| {r['id']} | – | not run | | | | |")
            continue
        per_variant.setdefault(s["variant"], []).append(s)
        acc = (s["final_valid"] or {}).get("accuracy")
        lines.append(
            f"| {r['id']} | {s['objective']} | {s['wall_minutes']} | {s['hours_of_audio_seen']} | "
            f"{'–' if acc is None else f'{acc:.3f}'} | {s['best_layer']['layer']} | "
            f"{s['best_layer']['valid_cer']:.3f} |"
        )
    lines += [
        "",
        "| variant | runs | best-layer CER (mean ± sd over seeds) | vs random init |",
        "| --- | --- | --- | --- |",
    ]
    means = {}
    for variant, runs in per_variant.items():
        cers = [s["best_layer"]["valid_cer"] for s in runs]
        means[variant] = statistics.fmean(cers)
        same = base is not None and all(
            (s.get("architecture"), s["probe_data"].get("normalize_waves"))
            == (base.get("architecture"), base["probe_data"].get("normalize_waves"))
            for s in runs
        )
        ratio = (
            "– (no baseline yet)"
            if base is None
            else f"{means[variant] / rand_best:.2f}×"
            if same
            else "– (the baseline is of another architecture or input normalisation)"
        )
        lines.append(f"| {variant} | {len(runs)} | {_mean_sd(cers)} | {ratio} |")
    if base:
        log_mel = (
            f", log-mel {min(r['valid_cer'] for r in base['log_mel']):.3f}" if base.get("log_mel") else ""
        )
        lines += [
            "",
            f"Baselines (architecture of `{base['architecture_of']}`): random init best layer "
            f"{rand_best:.3f} (mean of seeds {base['random_init_seeds']}){log_mel}.",
        ]
    complete = all(len(per_variant.get(v, [])) == len(spec["seeds"]) for v in spec["variants"])
    if complete and means:
        order = sorted(means, key=means.get)
        spreads = [
            statistics.stdev([s["best_layer"]["valid_cer"] for s in per_variant[v]]) for v in order[:2]
        ]
        gap = means[order[1]] - means[order[0]]
        lines += [
            "",
            f"Chosen on valid: **{order[0]}** (mean {means[order[0]]:.3f}; next {order[1]} "
            f"{means[order[1]]:.3f})"
            + (
                "."
                if gap > max(spreads)
                else f"; the gap ({gap:.3f}) is within the seed spread "
                f"({max(spreads):.3f}): the seeds do not separate them."
            ),
        ]
    else:
        lines += ["", "Not every variant has all its seeds: no choice yet."]
    return "\n".join(lines) + "\n"

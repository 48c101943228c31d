"""The ``logrank`` analysis: secure log-rank test and Kaplan–Meier curves.

    mpcgwas run logrank [--strata] [--time-resolution R] [--km auto|yes|no] [--km-min-at-risk M]

Nodes run protocols.logrank on the pooled survival counts (every provider's
``survival.tsv``: IID TIME EVENT GROUP [STRATUM]).  Times were rounded by the
providers to the study's public grid ([survival] resolution and max_time in
the study file: the nearest multiple of the resolution, so with resolution 1
a time of 4.4 days counts as day 4 and 4.6 as day 5).  ``--time-resolution R``
coarsens that grid for this run: R must be a multiple of the study's
resolution, and each submitted grid time goes to the nearest multiple of R
(ties upward).

What the analyst receives is what the study's reveal policy allows:

- ``logrank.test`` (in every new study): per group the number of subjects,
  observed and expected events, and the statistic (chisq, df); P is
  computed here, in plaintext.  Written to OUT/logrank.tsv
  (GROUP N OBSERVED EXPECTED) and the test to OUT/summary.json.
- ``logrank.km`` (opt-in: add ``"logrank.km" = ["analyst"]`` to the study's
  [policy]): per group and grid time the at-risk and event counts, the
  Kaplan–Meier estimate and its Greenwood SE — the whole pooled count table
  of each group.  With ``--km-min-at-risk M`` every row with fewer than M at
  risk is zeroed inside MPC before it is released (only its "suppressed"
  flag leaves), which cuts each curve where its risk set falls below M.
  Written to OUT/km.tsv (GROUP TIME AT_RISK EVENTS SURVIVAL SE; rows at the
  times where a subject leaves, as lifelines' timeline, plus the first grid
  time) and OUT/km.png.  ``--km auto`` (default) computes the curves when
  the policy allows them, ``--km yes`` fails when it does not.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from mpc.errors import InputError
from protocols import logrank as logrank_protocol


def _time_step(cohort, resolution_option) -> tuple[int, float]:
    """(coarsening factor, the study's grid resolution)."""
    subs = getattr(cohort, "subs", None)
    resolution = float(subs[0]["tables"]["survival"]["resolution"]) if subs else 1.0
    if resolution_option in (None, "", 0):
        return 1, resolution
    wanted = float(resolution_option)
    ratio = wanted / resolution
    step = int(round(ratio))
    if not (wanted > 0 and step >= 1 and abs(ratio - step) <= 1e-9 * max(1.0, ratio)):
        raise InputError(f"--time-resolution {wanted:g} must be a positive multiple of the study's "
                         f"[survival] resolution {resolution:g}")
    return step, resolution


def _check_strata(cohort) -> None:
    subs = getattr(cohort, "subs", None)
    if not subs:
        return
    without = [s.provider for s in subs if s["tables"]["survival"]["strata"] == ["all"]]
    if len(without) == len(subs):
        raise InputError("--strata: no provider submitted a STRATUM column in survival.tsv")
    if without:
        raise InputError(f"--strata: {', '.join(without)} submitted survival.tsv without a STRATUM column; "
                         f"every provider needs one for a stratified test")


def _node(ctx, cohort, options):
    cohort.require("survival", "the log-rank test")
    step, resolution = _time_step(cohort, options.get("time_resolution"))
    stratified = bool(options.get("strata"))
    if stratified:
        _check_strata(cohort)
    mode = str(options.get("km") or "auto").lower()
    if mode not in ("auto", "yes", "no"):
        raise InputError(f"--km must be auto, yes or no, got {mode!r}")
    km = logrank_protocol.km_allowed(ctx) if mode == "auto" else mode == "yes"
    opts = logrank_protocol.LogrankOptions(stratified=stratified, time_step=step, km=km,
                                          km_min_at_risk=int(options.get("km_min_at_risk") or 0))
    public = logrank_protocol.run(ctx, cohort, opts)
    public.update(n_samples=cohort.n_samples, sample_counts=dict(zip(cohort.providers, cohort.sample_counts)),
                  study_resolution=resolution, time_resolution=resolution * step)
    return public


# ------------------------------------------------------------ analyst side

def _num(v, digits=10):
    v = float(v)
    return "NA" if not math.isfinite(v) else f"{v:.{digits}g}"


def read_statistic(result) -> dict:
    """chisq, df, p (and the per-group counts) from the reconstructed outputs."""
    out = result.outputs
    n = out[("logrank.test", "n")].astype(np.int64)
    observed = out[("logrank.test", "observed")].astype(np.int64)
    expected = np.asarray(out[("logrank.test", "expected")], dtype=float)
    mantissa = float(out[("logrank.test", "chisq_mantissa")][0])
    exponent = int(out[("logrank.test", "chisq_exponent")][0])
    with_variance = int(out[("logrank.test", "groups_with_variance")][0])
    clamped = int(out[("logrank.test", "clamped_pivots")][0])
    df = max(with_variance - 1, 0)
    chisq = math.ldexp(mantissa, exponent) if mantissa != 0 else 0.0
    note = None
    if df == 0:
        chisq, p, neglog10 = 0.0, float("nan"), float("nan")
        note = "fewer than two groups have subjects at risk at an event time: no test"
    elif clamped:
        chisq, p, neglog10 = float("nan"), float("nan"), float("nan")
        note = ("the variance matrix is singular (groups whose risk sets never meet at an event time): "
                "the statistic is undefined; merge or drop groups")
    else:
        p = float(stats.chi2.sf(chisq, df))
        neglog10 = float(-stats.chi2.logsf(chisq, df) / math.log(10))
    return {"n": n, "observed": observed, "expected": expected, "chisq": chisq, "df": df, "p": p,
            "neglog10_p": neglog10, "note": note}


def km_rows(result):
    """Per group: (times, at_risk, events, survival, se, first suppressed index or None)."""
    pub, out = result.public, result.outputs
    times = pub["time_start"] + np.arange(pub["n_times"]) * pub["time_step"]
    at_risk = out[("logrank.km", "at_risk")].astype(np.int64)
    events = out[("logrank.km", "events")].astype(np.int64)
    survival = np.array(out[("logrank.km", "survival")], dtype=float)
    se = np.array(out[("logrank.km", "se")], dtype=float)
    undefined = out[("logrank.km", "undefined")].astype(bool)
    kept = out.get(("logrank.km", "kept"))
    kept = np.ones_like(at_risk, dtype=bool) if kept is None else kept.astype(bool)
    survival[undefined & (np.abs(survival) < 1e-9)] = 0.0     # S = 0 after a wipe-out (noise ~1e-13)
    se[undefined] = np.nan
    curves = []
    for g in range(at_risk.shape[0]):
        cut = np.flatnonzero(~kept[g])
        first_cut = int(cut[0]) if cut.size else None
        curves.append((times, at_risk[g], events[g], survival[g], se[g], kept[g], first_cut))
    return curves


def _write_km(result, out_dir, min_at_risk) -> None:
    groups = result.public["groups"]
    curves = km_rows(result)
    with open(out_dir / "km.tsv", "w") as fh:
        fh.write("GROUP\tTIME\tAT_RISK\tEVENTS\tSURVIVAL\tSE\n")
        for label, (times, n, d, s, se, kept, first_cut) in zip(groups, curves):
            leaving = n - np.append(n[1:], 0)
            rows = np.flatnonzero(kept & ((leaving > 0) | (np.arange(n.size) == 0)))
            for k in rows:
                fh.write(f"{label}\t{_num(times[k])}\t{n[k]}\t{d[k]}\t{_num(s[k])}\t{_num(se[k])}\n")
            if first_cut is not None:
                fh.write(f"{label}\t{_num(times[first_cut])}\t<{min_at_risk}\tNA\tNA\tNA\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (times, n, d, s, se, kept, first_cut) in zip(groups, curves):
        end = first_cut if first_cut is not None else int(np.flatnonzero(n > 0)[-1]) + 1 if (n > 0).any() else 1
        line, = ax.step(times[:end], s[:end], where="post", label=f"{label} (n = {n[0]})")
        censored = np.flatnonzero((n[:end] - d[:end] - np.append(n[1:end], 0)) > 0)
        ax.plot(times[censored], s[censored], "|", color=line.get_color(), markersize=6)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival")
    title = "Kaplan–Meier estimate"
    if min_at_risk:
        title += f" (rows with fewer than {min_at_risk} at risk suppressed)"
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "km.png", dpi=120)
    plt.close(fig)


def _finalize(result, options, out_dir):
    pub = result.public
    groups = pub["groups"]
    test = read_statistic(result)
    with open(out_dir / "logrank.tsv", "w") as fh:
        fh.write("GROUP\tN\tOBSERVED\tEXPECTED\n")
        for label, n, o, e in zip(groups, test["n"], test["observed"], test["expected"]):
            fh.write(f"{label}\t{n}\t{o}\t{_num(e)}\n")
    files = ["logrank.tsv"]
    km = ("logrank.km", "survival") in result.outputs
    if km:
        _write_km(result, out_dir, pub["km_min_at_risk"])
        files += ["km.tsv", "km.png"]
    summary = {
        "test": "stratified log-rank" if pub["stratified"] else "log-rank",
        "groups": groups, "strata": pub["strata"] if pub["stratified"] else None,
        "chisq": test["chisq"], "df": test["df"], "p": test["p"], "neglog10_p": test["neglog10_p"],
        "observed": dict(zip(groups, test["observed"].tolist())),
        "expected": dict(zip(groups, [float(e) for e in test["expected"]])),
        "n": dict(zip(groups, test["n"].tolist())),
        "n_samples": pub["n_samples"], "sample_counts": pub["sample_counts"],
        "time_resolution": pub["time_resolution"], "grid_times": pub["n_times"],
        "km": km, "km_min_at_risk": pub["km_min_at_risk"] if km else None,
        "files": files,
    }
    if test["note"]:
        summary["note"] = test["note"]
    return summary


OPTIONS = (
    ("--strata", dict(action="store_true", default=False,
                      help="stratified log-rank test on the submitted STRATUM column")),
    ("--time-resolution", dict(type=float, default=None,
                               help="coarser time grid: a multiple of the study's [survival] resolution")),
    ("--km", dict(choices=("auto", "yes", "no"), default="auto",
                  help="Kaplan-Meier curves: auto = when the study's policy allows logrank.km")),
    ("--km-min-at-risk", dict(type=int, default=0,
                              help="suppress Kaplan-Meier rows with fewer patients at risk (0: none)")),
)


def __getattr__(name):
    """``ANALYSIS``, built on first use: parties.analyses imports this module to
    register it, so Analysis cannot be imported here at module level."""
    if name != "ANALYSIS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from parties.analyses import Analysis

    if "ANALYSIS" not in globals():
        globals()["ANALYSIS"] = Analysis(
            "logrank", "log-rank test (optionally stratified) and Kaplan-Meier curves per group",
            _node, _finalize, dict(logrank_protocol.POLICY), OPTIONS)
    return globals()["ANALYSIS"]

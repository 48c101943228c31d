"""Secure log-rank test and Kaplan–Meier curves against lifelines and the plaintext reference.

Real survival data shipped with lifelines (waltons, rossi, lung) are split by
rows across 3 providers, masked as providers do (tests.memcohort) and
analysed by dealer + 3 nodes (threads) through the analysis' own node
function; the analyst side (parties.analysis_logrank) turns the outputs into
chisq, df and P.  Tolerances: chisq and P within 1e-6 relative of lifelines
(measured: below 1e-7), observed events exact, expected within 1e-9, the KM
estimate within 1e-9 absolute of KaplanMeierFitter at every grid time, the
Greenwood SE within 1e-7 relative of protocols.reference.  One test runs the
whole CLI path through real daemons.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_lung, load_rossi, load_waltons
from lifelines.statistics import logrank_test, multivariate_logrank_test

from mpc import field
from mpc.errors import InputError, PolicyError
from parties import analysis_logrank as AL
from parties.cohort import StoredCohort
from parties.harness import ChildError, run_threads
from parties.reader import AnalystResult
from parties.sites import SurvivalTable
from protocols import logrank as LR
from protocols import reference as R
from tests.memcohort import make_submissions

TEST_ONLY = {"logrank.test": ["analyst"]}
WITH_KM = {"logrank.test": ["analyst"], "logrank.km": ["analyst"]}


# ------------------------------------------------------------ helpers

def split_rows(n, parts=3, seed=0):
    return np.array_split(np.random.default_rng(seed).permutation(n), parts)


def site_tables(time, event, group, stratum=None, rows=None):
    rows = split_rows(len(time)) if rows is None else rows
    return [SurvivalTable(iid=np.array([f"s{i}" for i in r]), time=np.asarray(time, float)[r],
                          event=np.asarray(event)[r].astype(np.int8), group=np.asarray(group)[r].astype(str),
                          stratum=None if stratum is None else np.asarray(stratum)[r].astype(str))
            for r in rows]


def _node(ctx, subs, options):
    return AL._node(ctx, StoredCohort(ctx, subs), options)


def secure(time, event, group, stratum=None, *, rows=None, policy=WITH_KM, n_grid=None, **options):
    """Run the analysis on 3 providers (threads); returns (AnalystResult, traffic of node 0)."""
    tables = site_tables(time, event, group, stratum, rows)
    n_grid = n_grid or int(np.max(time)) + 1
    subs, seeds = make_submissions([np.zeros((len(t), 0), np.int8) for t in tables], 3, survival=tables,
                                   n_grid=n_grid)
    res = run_threads(3, _node, (subs, options), policy=policy, extra_seeds=seeds, full=True, timeout=300)
    shares, fracs = {}, {}
    for node in res[:-1]:
        for name, share, meta in node["outputs"]:
            key = (name, meta.get("key"))
            shares[key] = share if key not in shares else field.add(shares[key], share)
            fracs[key] = meta["frac"]
    outputs = {k: field.to_int64(v) if fracs[k] == 0 else field.decode_fixed(v, fracs[k])
               for k, v in shares.items()}
    return AnalystResult("logrank", outputs=outputs, public=res[0]["result"]), res[0]["traffic"]


def reference_tables(time, event, group, labels, grid):
    table = R.count_table(time, event, np.asarray(group).astype(str), labels, grid)
    return table, R.logrank(table.at_risk, table.events), R.kaplan_meier(table.at_risk, table.events)


def assert_km(result, table, km, time=None, event=None, group=None):
    """Counts exact, S within 1e-9 (and of KaplanMeierFitter when the subjects are given),
    SE within 1e-7 relative, NaN SE exactly where the reference has one."""
    out = result.outputs
    assert np.array_equal(out[("logrank.km", "at_risk")], table.at_risk)
    assert np.array_equal(out[("logrank.km", "events")], table.events)
    curves = AL.km_rows(result)
    survival = np.array([c[3] for c in curves])
    se = np.array([c[4] for c in curves])
    assert np.max(np.abs(survival - km.survival)) < 1e-9
    assert np.array_equal(np.isnan(se), np.isnan(km.se))
    ok = np.isfinite(km.se)
    assert np.allclose(se[ok], km.se[ok], rtol=1e-7, atol=1e-12)
    if time is not None:
        labels = list(table.groups)
        for row, label in enumerate(labels):
            members = np.asarray(group).astype(str) == label
            fitter = KaplanMeierFitter().fit(time[members], event[members], timeline=table.grid)
            lifelines_s = fitter.survival_function_.to_numpy()[:, 0]
            assert np.max(np.abs(survival[row] - lifelines_s)) < 1e-9


def chisq_of(result):
    test = AL.read_statistic(result)
    return test["chisq"], test["df"], test["p"], test


# ------------------------------------------------------------ against lifelines

def test_two_groups_match_lifelines_and_km():
    w = load_waltons()
    t, e, g = w["T"].to_numpy(float), w["E"].to_numpy(), w["group"].to_numpy()
    labels = sorted(set(g))
    result, traffic = secure(t, e, g)
    a, b = g == labels[0], g == labels[1]
    expected = logrank_test(t[a], t[b], e[a], e[b])
    chisq, df, p, test = chisq_of(result)
    assert df == 1
    assert chisq == pytest.approx(expected.test_statistic, rel=1e-6)
    assert p == pytest.approx(expected.p_value, rel=1e-6)
    assert abs(chisq / expected.test_statistic - 1) < 1e-7          # what is reached, with margin
    assert test["observed"].tolist() == [int(e[a].sum()), int(e[b].sum())]
    assert test["n"].tolist() == [int(a.sum()), int(b.sum())]
    table, ref, km = reference_tables(t, e, g, labels, np.arange(int(t.max()) + 1, dtype=float))
    assert np.allclose(test["expected"], ref.expected, rtol=0, atol=1e-9)
    assert_km(result, table, km, t, e, g)
    # nothing reaches the nodes; rounds stay O(log) in the grid
    assert sum(p["rounds"] for p in traffic.values()) < 400


def test_rossi_two_groups_without_km():
    rossi = load_rossi()
    t, e, g = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(), rossi["fin"].to_numpy()
    result, _ = secure(t, e, g, policy=TEST_ONLY)
    expected = logrank_test(t[g == 0], t[g == 1], e[g == 0], e[g == 1])
    chisq, df, p, _ = chisq_of(result)
    assert chisq == pytest.approx(expected.test_statistic, rel=1e-6)
    assert p == pytest.approx(expected.p_value, rel=1e-6)
    # the default policy releases the test only: no curve was even computed
    assert not any(name == "logrank.km" for name, _ in result.outputs) and result.public["km"] is False


def test_several_groups_match_lifelines():
    lung = load_lung().dropna(subset=["ph.ecog"])             # 4 groups, ECOG 3 has one subject
    rossi = load_rossi()
    rossi["prio_band"] = np.minimum(rossi["prio"] // 3, 3)
    for frame, time, event, group in ((lung, "time", "status", "ph.ecog"), (rossi, "week", "arrest", "prio_band")):
        t, e, g = frame[time].to_numpy(float), frame[event].to_numpy(), frame[group].to_numpy().astype(int)
        result, _ = secure(t, e, g, km="no")
        expected = multivariate_logrank_test(t, g, e)
        chisq, df, p, test = chisq_of(result)
        assert df == expected.degrees_of_freedom == len(set(g)) - 1
        assert chisq == pytest.approx(expected.test_statistic, rel=1e-6)
        assert p == pytest.approx(expected.p_value, rel=1e-6)
        assert test["observed"].sum() == e.sum()


def test_stratified_equals_plaintext_formula():
    rossi = load_rossi()
    t, e = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy()
    stratum = rossi["wexp"].to_numpy() * 2 + rossi["mar"].to_numpy()
    grid = np.arange(int(t.max()) + 1, dtype=float)
    for group, labels in ((rossi["fin"].to_numpy(), ["0", "1"]),
                          (np.minimum(rossi["prio"].to_numpy() // 3, 2), ["0", "1", "2"])):
        result, _ = secure(t, e, group, stratum, strata=True, km="no")
        tables = [R.count_table(t[stratum == s], e[stratum == s], group[stratum == s].astype(str), labels, grid)
                  for s in np.unique(stratum)]
        ref = R.logrank_stratified(tables)
        chisq, df, p, test = chisq_of(result)
        assert df == ref.df == len(labels) - 1
        assert chisq == pytest.approx(ref.chisq, rel=1e-6)
        assert p == pytest.approx(ref.p, rel=1e-6)
        assert np.allclose(test["expected"], ref.expected, rtol=0, atol=1e-9)
        assert result.public["strata"] == ["0", "1", "2", "3"] and result.public["stratified"]
        # pooled over strata, the same data give the unstratified test
    plain, _ = secure(t, e, rossi["fin"].to_numpy(), stratum, km="no")
    fin = rossi["fin"].to_numpy()
    assert chisq_of(plain)[0] == pytest.approx(
        logrank_test(t[fin == 0], t[fin == 1], e[fin == 0], e[fin == 1]).test_statistic, rel=1e-6)


# ------------------------------------------------------------ edge cases

EDGE_CASES = {
    # ties across groups and a group without any event
    "ties, a group without events": ([1, 1, 2, 2, 2, 3, 4, 4, 5, 5], [1, 1, 1, 0, 1, 1, 0, 1, 0, 0],
                                     [0, 1, 0, 0, 1, 1, 2, 0, 2, 2]),
    # a single grid time: everyone has the event or is censored at t = 0
    "a single time point": ([0] * 8, [1, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1]),
    # everyone left in group 0 dies at t = 2 (S = 0, SE undefined from then on)
    "n = d": ([1, 2, 2, 3, 3, 4, 5, 6], [1, 1, 1, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1, 1]),
    # group 2 leaves before the first event: never at risk at an event time
    "a group never at risk at an event": ([0, 0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 0, 1, 1], [2, 2, 0, 1, 0, 1, 0]),
    # no event at all: no test (df 0, P NaN, as the reference)
    "no events": ([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_match_reference(case):
    t, e, g = (np.asarray(v) for v in EDGE_CASES[case])
    t = t.astype(float)
    labels = sorted(set(g.astype(str)))
    rows = [np.arange(i, len(t), 3) for i in range(3)]
    result, _ = secure(t, e, g, rows=rows)
    table, ref, km = reference_tables(t, e, g, labels, np.arange(int(t.max()) + 1, dtype=float))
    chisq, df, p, test = chisq_of(result)
    assert df == ref.df
    if ref.df == 0:
        assert chisq == 0.0 and math.isnan(p) and test["note"]
    else:
        assert chisq == pytest.approx(ref.chisq, rel=1e-6)
        assert p == pytest.approx(ref.p, rel=1e-6)
    assert np.allclose(test["expected"], ref.expected, rtol=0, atol=1e-9)
    assert_km(result, table, km)


def test_provider_without_a_group_and_fewer_than_two_groups():
    w = load_waltons()
    t, e, g = w["T"].to_numpy(float), w["E"].to_numpy(), w["group"].to_numpy()
    # site1 has only controls (129 in all), site3 only miR-137 patients (34)
    order = np.argsort(g, kind="stable")
    rows = [order[:60], order[60:140], order[140:]]
    assert len(set(g[rows[0]])) == 1 and len(set(g[rows[2]])) == 1
    result, _ = secure(t, e, g, rows=rows, policy=TEST_ONLY)
    labels = sorted(set(g))
    expected = logrank_test(t[g == labels[0]], t[g == labels[1]], e[g == labels[0]], e[g == labels[1]])
    assert chisq_of(result)[0] == pytest.approx(expected.test_statistic, rel=1e-6)
    one = g == labels[0]
    with pytest.raises(ChildError, match="at least two groups"):
        secure(t[one], e[one], g[one], policy=TEST_ONLY)


def test_strata_must_come_from_every_provider():
    rossi = load_rossi()
    t, e, g = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(), rossi["fin"].to_numpy()
    tables = site_tables(t, e, g, rossi["wexp"].to_numpy())
    tables[2] = SurvivalTable(iid=tables[2].iid, time=tables[2].time, event=tables[2].event, group=tables[2].group)
    subs, seeds = make_submissions([np.zeros((len(x), 0), np.int8) for x in tables], 3, survival=tables,
                                   n_grid=int(t.max()) + 1)
    with pytest.raises(ChildError, match="site3 submitted survival.tsv without a STRATUM column"):
        run_threads(3, _node, (subs, {"strata": True}), policy=TEST_ONLY, extra_seeds=seeds)


def test_suppression_and_coarser_grid():
    lung = load_lung()
    t, e, g = lung["time"].to_numpy(float), lung["status"].to_numpy(), lung["sex"].to_numpy()
    step, m = 30, 10
    result, _ = secure(t, e, g, time_resolution=step, km_min_at_risk=m)
    # the reference on times rounded to the nearest multiple of 30 days (ties upward)
    tc = np.floor((t + step // 2) / step) * step
    n_coarse = int(np.max(t) + step // 2) // step + 1
    grid = np.arange(n_coarse) * float(step)
    labels = ["1", "2"]
    table, ref, km = reference_tables(tc, e, g, labels, grid)
    chisq, df, p, test = chisq_of(result)
    assert chisq == pytest.approx(ref.chisq, rel=1e-6)
    assert result.public["n_times"] == n_coarse and result.public["time_step"] == step
    # rows with fewer than m at risk are zero, and flagged; the others are the reference's
    out = result.outputs
    kept = out[("logrank.km", "kept")].astype(bool)
    assert np.array_equal(kept, table.at_risk >= m)
    for key in ("at_risk", "events", "survival", "se", "undefined"):
        assert not np.any(out[("logrank.km", key)][~kept])
    assert np.array_equal(out[("logrank.km", "at_risk")][kept], table.at_risk[kept])
    curves = AL.km_rows(result)
    survival = np.array([c[3] for c in curves])
    assert np.max(np.abs(survival[kept] - km.survival[kept])) < 1e-9
    with pytest.raises(ChildError, match="multiple of the study"):
        secure(t, e, g, time_resolution=2.5, policy=TEST_ONLY)


def test_km_needs_the_policy():
    w = load_waltons()
    t, e, g = w["T"].to_numpy(float), w["E"].to_numpy(), w["group"].to_numpy()
    with pytest.raises(ChildError, match="logrank.km"):
        secure(t, e, g, policy=TEST_ONLY, km="yes")
    refusing = SimpleNamespace(policy=SimpleNamespace(allows=lambda name, to: False))
    with pytest.raises(PolicyError, match="logrank.km"):        # before any computation
        LR.run(refusing, None, LR.LogrankOptions(km=True))
    with pytest.raises(InputError):
        LR.LogrankOptions(km_min_at_risk=-1)


# ------------------------------------------------------------ through the daemons and the CLI

def test_cli_end_to_end(tmp_path):
    from parties.local import LocalStudy

    w = load_waltons()
    t, e, g = w["T"].to_numpy(float), w["E"].to_numpy(), w["group"].to_numpy()
    stratum = np.where(np.arange(len(t)) % 2 == 0, "A", "B")
    rows = split_rows(len(t), seed=3)
    study = LocalStudy(tmp_path, policy={"logrank.km": ["analyst"]})
    try:
        for i, r in enumerate(rows):
            site = tmp_path / f"site{i + 1}"
            site.mkdir()
            with open(site / "survival.tsv", "w") as fh:
                fh.write("IID\tTIME\tEVENT\tGROUP\tSTRATUM\n")
                for j in r:
                    fh.write(f"p{j}\t{t[j]:g}\t{e[j]}\t{g[j]}\t{stratum[j]}\n")
            study.submit(site, f"site{i + 1}")
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "parties.cli", "run", "--study", str(study.path), "--out", str(out),
               "--no-progress", "logrank", "--km-min-at-risk", "5"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())["logrank"]
        labels = sorted(set(g))
        a, b = g == labels[0], g == labels[1]
        expected = logrank_test(t[a], t[b], e[a], e[b])
        assert summary["chisq"] == pytest.approx(expected.test_statistic, rel=1e-6)
        assert summary["p"] == pytest.approx(expected.p_value, rel=1e-6)
        assert summary["df"] == 1 and summary["km"] and summary["km_min_at_risk"] == 5
        rows_tsv = [line.split("\t") for line in (out / "logrank.tsv").read_text().splitlines()]
        assert rows_tsv[0] == ["GROUP", "N", "OBSERVED", "EXPECTED"]
        assert [r[0] for r in rows_tsv[1:]] == labels
        assert [int(r[2]) for r in rows_tsv[1:]] == [int(e[a].sum()), int(e[b].sum())]
        km_lines = (out / "km.tsv").read_text().splitlines()
        assert km_lines[0] == "GROUP\tTIME\tAT_RISK\tEVENTS\tSURVIVAL\tSE"
        fitter = KaplanMeierFitter().fit(t[a], e[a])
        for line in km_lines[1:]:
            label, time, at_risk = line.split("\t")[:3]
            if label == labels[0] and not at_risk.startswith("<"):
                assert float(line.split("\t")[4]) == pytest.approx(
                    float(fitter.survival_function_at_times(float(time)).iloc[0]), abs=1e-6)
        assert any(line.split("\t")[2] == "<5" for line in km_lines[1:])
        assert (out / "km.png").stat().st_size > 0
        names = {r["name"] for r in summary["reveals"]}
        assert names == {"logrank.test", "logrank.km"}
        # stratified on the submitted STRATUM column (the analyst's API, same daemons)
        strat = study.run("logrank", out, strata=True, km="no")
        grid = np.arange(10001, dtype=float)
        tables = [R.count_table(t[stratum == s], e[stratum == s], g[stratum == s], labels, grid) for s in "AB"]
        assert strat["chisq"] == pytest.approx(R.logrank_stratified(tables).chisq, rel=1e-6)
        assert strat["test"] == "stratified log-rank" and strat["strata"] == ["A", "B"]
    finally:
        study.close()


# ------------------------------------------------------------ masking bounds

def test_every_truncation_input_is_within_its_bound(monkeypatch):
    """The protocol's own truncations: the reconstructed input of each one lies
    strictly inside the bound it declares to the dealer (else its mask would
    not hide it), with the largest cohort-independent margins shown."""
    import threading

    import mpc.truncate as truncate_module

    real = truncate_module.truncate_many
    seen, lock = {}, threading.Lock()

    def recording(ctx, xs, shifts, bits=None, plans=None):
        xs = list(xs)
        declared = [p.bits if p is not None else b for p, b in zip(plans or [None] * len(xs), bits)]
        with lock:
            calls = seen.setdefault(ctx.index, [])
            calls.append([(x.share.copy(), b) for x, b in zip(xs, declared)])
        return real(ctx, xs, shifts, bits, plans=plans)

    monkeypatch.setattr(truncate_module, "truncate_many", recording)
    lung = load_lung().dropna(subset=["ph.ecog"])
    t, e, g = lung["time"].to_numpy(float), lung["status"].to_numpy(), lung["ph.ecog"].to_numpy().astype(int)
    secure(t, e, g, km_min_at_risk=3)
    t, e, g = (np.asarray(v) for v in EDGE_CASES["n = d"])
    secure(t.astype(float), e, g)
    worst = -np.inf
    for k in range(len(seen[0])):
        for j, (share, bits) in enumerate(seen[0][k]):
            total = share
            for node in (1, 2):
                total = field.add(total, seen[node][k][j][0])
            magnitude = np.max(np.abs(field.decode_fixed(total, 0))) if total.size else 0.0
            if magnitude > 0:
                worst = max(worst, math.log2(magnitude) - (bits - 1))
    print(f"largest truncation input: 2^{worst:.2f} of its bound")
    assert worst < 0, f"a truncation input exceeds its bound by 2^{worst:.2f}"

"""Load: 20 providers submit at once to 3 nodes, then an analysis — with real daemons.

A dealer and three nodes (``python -m parties.cli``, CurveZMQ) on loopback; a
study with 20 providers; 20 simulated sites (same SNPs, 500 samples in all).
Checked:

- 20 threads submit concurrently (parties.provider.submit, one client each):
  every submission is stored exactly once on every node (same submission id
  everywhere, one "stored submission" log line per node, nothing left in
  staging or trash, every array verifies against its checksum) and the
  dealer holds exactly one seed record per submission;
- the pooled allele counts (``freq``) equal protocols.reference.freq on the
  concatenated genotypes exactly (OBS_CT, ALT counts recovered from
  ALT_FREQS), and missing rates to the printed precision;
- racing re-submissions: two uploads of the same site by the same provider at
  once (``--replace``) never leave a mix on a node — each node holds one
  whole submission, the same one on every node, and the counts stay exact.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from parties.local import LocalStudy
from parties.provider import submit
from parties.service import ServiceError
from parties.simulate import simulate
from parties.sites import encode_genotypes, read_site
from parties.storage import Submission
from protocols import reference as ref
from tests import plinkutil

pytestmark = pytest.mark.slow

N_PROVIDERS = 20
PROVIDERS = tuple(f"site{i}" for i in range(1, N_PROVIDERS + 1))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    simulate(out_dir=root / "sites", sites=N_PROVIDERS, samples=500, snps=300, seed=13, n_causal=2)
    study = LocalStudy(root / "study", providers=PROVIDERS, timeout=5.0, block_snps=128)
    try:
        yield {"root": root, "study": study}
    finally:
        study.close()


def _concurrently(jobs, timeout=180):
    """Run callables in threads released together; returns their results or exceptions."""
    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def target(k):
        barrier.wait()
        try:
            results[k] = jobs[k]()
        except BaseException as exc:  # noqa: BLE001 - inspected by the caller
            results[k] = exc

    threads = [threading.Thread(target=target, args=(k,), daemon=True) for k in range(len(jobs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "submissions still running"
    return results


def _pooled_reference(root, providers):
    dosage, missing = [], []
    for name in providers:
        site = read_site(root / "sites" / name)
        enc = encode_genotypes(site.genotype_block(0, site.n_snps))
        dosage.append(enc.dosage)
        missing.append(enc.missing)
    return ref.freq(np.vstack(dosage), np.vstack(missing))


def _check_freq(world, out):
    study, root = world["study"], world["root"]
    summary = study.run("freq", out)
    want = _pooled_reference(root, PROVIDERS)
    got = plinkutil.read_table(Path(out) / "freq.tsv")
    assert summary["n_samples"] == 500 and summary["sample_counts"].keys() == set(PROVIDERS)
    obs = got["OBS_CT"].astype(np.int64)
    assert np.array_equal(obs, want.obs_ct)
    alt = np.rint(got["ALT_FREQS"].astype(float) * obs).astype(np.int64)   # 6 significant digits suffice
    assert np.array_equal(alt, want.alt_count)
    assert np.allclose(got["MISSING_RATE"].astype(float), want.missing_rate, rtol=1e-5, atol=1e-7)


def _check_stored_once(world, expected: dict):
    """Every node holds exactly `expected` ({provider: submission id}), whole and verified."""
    study = world["study"]
    for status in study.status():
        assert {p: s["submission"] for p, s in status["submissions"].items()} == expected, status["node"]
        assert status["busy"] is False
    for i in range(study.study.n_nodes):
        data = study.root / "data" / f"node{i}"
        subs = {s.provider: s for s in (Submission(d) for d in sorted((data / "submissions").iterdir()))}
        assert {p: s["submission"] for p, s in subs.items()} == expected
        for sub in subs.values():
            sub.verify()
            assert set(sub.meta["arrays"]) == set(next(iter(subs.values())).meta["arrays"])
        assert sorted(d.name for d in (data / "submissions").iterdir()) == sorted(expected)
        assert not list((data / "staging").iterdir())
        assert not (data / "trash").exists() or not list((data / "trash").iterdir())
    seeds = study.root / "data" / "dealer" / "seeds"
    registered = {json.loads(f.read_text())["submission"] for f in seeds.glob("*.json")}
    assert set(expected.values()) <= registered


def test_twenty_providers_submit_concurrently_then_freq(world):
    study, root = world["study"], world["root"]
    start = time.monotonic()
    results = _concurrently([lambda name=name: submit(study.study, root / "sites" / name, name, timeout=120)
                             for name in PROVIDERS])
    took = time.monotonic() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    expected = {name: r["submission"] for name, r in zip(PROVIDERS, results)}
    assert len(set(expected.values())) == N_PROVIDERS
    print(f"{N_PROVIDERS} concurrent submissions to 3 nodes in {took:.1f} s")
    _check_stored_once(world, expected)
    for i in range(study.study.n_nodes):
        log = (study.root / "logs" / f"node{i}.log").read_text()
        for name, sub in expected.items():
            assert log.count(f"stored submission {sub} of {name} ") == 1
    seeds = study.root / "data" / "dealer" / "seeds"
    assert len(list(seeds.glob("*.json"))) == N_PROVIDERS
    _check_freq(world, root / "freq")
    world["expected"] = expected


def test_racing_resubmissions_never_mix(world):
    study, root = world["study"], world["root"]
    expected = dict(world["expected"])
    racers = PROVIDERS[:6]
    jobs = [lambda name=name: submit(study.study, root / "sites" / name, name, replace=True, timeout=120)
            for name in racers for _ in range(2)]
    results = _concurrently(jobs)
    statuses = study.status()
    outcomes = collections.Counter()
    for name, pair in zip(racers, (results[k:k + 2] for k in range(0, len(results), 2))):
        done = [r["submission"] for r in pair if isinstance(r, dict)]
        failed = [r for r in pair if isinstance(r, BaseException)]
        for exc in failed:   # a loser is told that a newer upload of the same provider superseded it
            assert isinstance(exc, ServiceError) and f"upload of {name}" in str(exc), exc
        outcomes[len(done)] += 1
        # One whole submission on every node, the same everywhere: a successful one, or the old one
        # if each upload superseded the other on some node (then both failed and nothing changed).
        held = {s["submissions"][name]["submission"] for s in statuses}
        assert len(held) == 1 and held <= set(done) | ({expected[name]} if not done else set()), \
            (name, held, done)
        expected[name] = held.pop()
    print(f"racing re-submissions, number of providers by uploads completed (of 2): {dict(outcomes)}")
    _check_stored_once(world, expected)
    _check_freq(world, root / "freq_after_races")

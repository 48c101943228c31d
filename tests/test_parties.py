"""The user's path: study, daemons, submission, analyst results, and bad input.

Real processes: a dealer and three nodes (``python -m parties.cli``) on loopback
with CurveZMQ.  Pooled frequencies are compared with plink2 on the
concatenated data; every bad input must give a one-line error naming the
file or party and leave the nodes' stored data intact.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest


from mpc.errors import InputError
from parties import keys as keyfiles
from parties.reader import run_analysis
from parties.service import ServiceError
from parties.local import LocalStudy
from tests.plinkutil import merge_sites

SHARED = "/work/shared/data/secure-gwas-1k"
PLINK2 = shutil.which("plink2")


def _shared_sites(tmp_path):
    """Copies of the three secure-gwas-1k sites (the shared folder is read-only)."""
    from pathlib import Path

    src = Path(SHARED)
    if not src.exists():
        src = Path(__file__).parent / "data" / "secure-gwas-1k"
    out = []
    for s in ("site1", "site2", "site3"):
        shutil.copytree(src / s, tmp_path / "sites" / s)
        out.append(tmp_path / "sites" / s)
    return out


def _plink_freq(prefix, out):
    assert PLINK2, "plink2 is required for the tests (scripts/bootstrap.sh --test installs it)"
    subprocess.run([PLINK2, "--bfile", str(prefix), "--freq", "--missing", "--out", str(out),
                    "--allow-extra-chr"], check=True, capture_output=True)
    afreq = np.genfromtxt(f"{out}.afreq", dtype=None, names=True, comments=None, encoding=None)
    vmiss = np.genfromtxt(f"{out}.vmiss", dtype=None, names=True, comments=None, encoding=None)
    return afreq, vmiss


def _read_freq_tsv(path):
    return np.genfromtxt(path, dtype=None, names=True, comments=None, encoding=None, delimiter="\t")


def _check_against_plink(ours, afreq, vmiss):
    assert list(ours["ID"]) == list(afreq["ID"])
    assert np.allclose(ours["ALT_FREQS"], afreq["ALT_FREQS"], atol=1e-6)
    assert np.array_equal(ours["OBS_CT"], afreq["OBS_CT"])
    assert np.allclose(ours["MISSING_RATE"], vmiss["F_MISS"], atol=1e-6)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    s = LocalStudy(root)
    yield s
    s.close()


def test_freq_pooled_equals_plink2(study, tmp_path):
    sites = _shared_sites(tmp_path)
    for site, name in zip(sites, ("site1", "site2", "site3")):
        study.submit(site, name)
    summary = study.run("freq", tmp_path / "out")
    assert summary["n_samples"] == 1000 and summary["n_snps"] == 1000
    merge_sites(sites, tmp_path / "merged")
    afreq, vmiss = _plink_freq(tmp_path / "merged", tmp_path / "plink")
    _check_against_plink(_read_freq_tsv(tmp_path / "out" / "freq.tsv"), afreq, vmiss)
    # The results reached the analyst only: the reveal log lists just the counts, to the analyst.
    assert {(r["name"], r["to"]) for r in summary["reveals"]} == {("freq.counts", "analyst")}


def test_bad_inputs_leave_stored_data_intact(study, tmp_path):
    sites = _shared_sites(tmp_path)
    before = study.status()

    # A truncated .bed.
    bad = tmp_path / "truncated"
    shutil.copytree(sites[0], bad)
    raw = (bad / "genotypes.bed").read_bytes()
    (bad / "genotypes.bed").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="genotypes.bed"):
        study.submit(bad, "site1", replace=True)

    # A .bim that disagrees with the other sites' SNP list.
    bad = tmp_path / "badbim"
    shutil.copytree(sites[1], bad)
    lines = (bad / "genotypes.bim").read_text().splitlines()
    f = lines[3].split("\t")
    f[4], f[5] = f[5], f[4]
    lines[3] = "\t".join(f)
    (bad / "genotypes.bim").write_text("\n".join(lines) + "\n")
    with pytest.raises(ServiceError, match="SNP #4"):
        study.submit(bad, "site2", replace=True)

    # A phenotype file with an unknown ID.
    bad = tmp_path / "badpheno"
    shutil.copytree(sites[2], bad)
    rows = [r.split("\t") for r in (bad / "phenotypes.tsv").read_text().splitlines()]
    rows[1][1] = "NOT_A_SAMPLE"
    (bad / "phenotypes.tsv").write_text("\n".join("\t".join(r) for r in rows) + "\n")
    with pytest.raises(InputError, match="phenotypes.tsv"):
        study.submit(bad, "site3", replace=True)

    # A second submission under the same provider name.
    with pytest.raises(ServiceError, match="already submitted"):
        study.submit(sites[0], "site1")

    # An analyst whose key is not in the study: the client refuses to use it, and a
    # connection made with it anyway is refused by the node (and logged there).
    rogue = keyfiles.generate()
    keyfiles.write(tmp_path / "rogue.key", rogue)
    with pytest.raises(InputError, match="does not match"):
        run_analysis(study.study, "freq", {}, tmp_path / "rogue", key_file=tmp_path / "rogue.key",
                     progress=False, connect_timeout=3.0)
    import zmq

    from parties.service import ServiceClient
    ctx = zmq.Context()
    try:
        c = ServiceClient(ctx, study.study.node(0).service, "analyst", "node0", rogue.pair,
                          study.study.node(0).public_key, timeout=2.0)
        with pytest.raises(ServiceError, match="no answer from node0"):
            c.call({"cmd": "status"})
        c.close()
    finally:
        ctx.destroy(linger=0)
    assert "not in the study" in (study.root / "logs" / "node0.log").read_text()

    after = study.status()
    assert [b["submissions"] for b in before] == [a["submissions"] for a in after]


def test_node_refuses_mistyped_indicator_arrays(study, tmp_path):
    """The 0/1 matrices travel as narrow-masked int64 (mpc.triples.MaskSpec.width),
    everything else as field elements: a provider that sends the wrong kind, or
    an int64 out of the narrow range, is refused and nothing is stored."""
    import secrets

    from mpc import field
    from mpc.prg import new_seed
    from parties.cohort import SnpInfo
    from parties.provider import site_arrays
    from parties.service import ClientContext
    from parties.sites import read_site

    sites = _shared_sites(tmp_path)
    before = study.status()
    site = read_site(sites[0])
    st = study.study
    meta, _ = site_arrays(site, st.params, st.block_snps, 2, 1.0)
    meta.update(provider="site1", submission=f"site1-{secrets.token_hex(6)}")
    snps = np.frombuffer(SnpInfo.to_text(site.snps).encode(), dtype=np.uint8)
    n, m = site.n_samples, meta["blocks"][0][1]
    bad = [("geno/missing/0", field.from_int(np.zeros((n, m), np.int64)), True, "int64 narrow-masked"),
           ("geno/het/0", np.full((n, m), 2, np.int64), False, "int64 narrow-masked"),
           ("geno/het/0", np.full((n, m), -(2 ** 63), np.int64), False, "int64 narrow-masked"),
           ("geno/imputed/0", np.zeros((n, m), np.int64), False, "field elements")]
    client = ClientContext(st, "site1")
    try:
        c = client.node(1, 10.0)
        for name, array, is_field, message in bad:
            c.call({"cmd": "submit_begin", "meta": meta, "seed": new_seed().hex(), "replace": True},
                   snps, is_field=False)
            with pytest.raises(ServiceError, match=message):
                c.call({"cmd": "submit_array", "name": name}, array, is_field=is_field)
            c.call({"cmd": "submit_abort"})
    finally:
        client.close()
    assert [b["submissions"] for b in before] == [a["submissions"] for a in study.status()]


def test_cli_one_line_errors(study, tmp_path):
    # Unknown provider name, through the real command line: one line, exit status 2.
    site = _shared_sites(tmp_path)[0]
    out = subprocess.run([sys.executable, "-m", "parties.cli", "submit", "--study", str(study.path),
                          "--site", str(site), "--name", "nosuchsite"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error:") and "nosuchsite" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # A chunk size that is not a positive number of SNPs: a clear error from the nodes.
    with pytest.raises((ServiceError, InputError), match="--qc-chunk-snps must be a positive number"):
        study.run("gwas", tmp_path / "badchunk", pheno="CASE", qc_chunk_snps=0)


def test_submission_to_a_node_that_is_down(study, tmp_path):
    site = _shared_sites(tmp_path)[0]
    before = study.status()
    study.stop("node2")
    try:
        with pytest.raises(ServiceError, match="node2"):
            study.submit(site, "site1", replace=True, timeout=3.0)
    finally:
        study.start("node2")
    assert [b["submissions"] for b in before] == [a["submissions"] for a in study.status()]

"""A data provider's submission: read the site, mask every array, send it to the nodes.

Masked submission (DESIGN.md, "Inputs"): the provider draws one fresh seed per
node; for an array x stored under name ``n`` its mask is
``a = Σ_i PRG(seed_i, "<submission>/<n>")`` and every node receives the public
``d = x - a`` plus its own seed, so node i's share of x is ``a_i`` (plus d on
node 0).  The dealer receives all seeds, so it can form the products a·b that
later Beaver products with x need — the genotype matrix is never opened.

Steps (nothing is visible to an analysis until the last one):

1. read and validate the site folder (a bad file stops here, nothing sent);
2. check every node and the dealer answer; the nodes check the SNP list
   against other providers' and refuse a second submission under the same
   name unless ``replace``;
3. register the seeds with the dealer;
4. stream the masked arrays (genotypes in SNP blocks) to every node's staging area;
5. commit on every node (an atomic rename each).  On any error the staged
   data is discarded everywhere.
"""
from __future__ import annotations

import logging
import secrets

import numpy as np

from mpc import field
from mpc.errors import InputError
from mpc.prg import Prg, new_seed
from mpc.triples import narrow_mask_ints, narrow_mask_width
from parties.cohort import SnpInfo, array_label
from parties.service import ClientContext, ServiceError
from parties.sites import encode_genotypes, read_site

log = logging.getLogger("mpcgwas.provider")


def _mask(x: np.ndarray, seeds, label: str) -> np.ndarray:
    """d = x - Σ_i PRG(seed_i, label), the public masked value of field array x;
    for an int64 0/1 array, d = x - Σ_i a_i with narrow shares a_i in
    [0, 2^w) (mpc.triples.narrow_mask_width(len(seeds))), an int64."""
    if x.dtype == np.int64:
        width = narrow_mask_width(len(seeds))
        if x.size and (x.min() < 0 or x.max() > 1):
            raise InputError(f"{label}: a narrow-masked array must be 0/1")
        d = x.copy()
        for s in seeds:
            d -= narrow_mask_ints(s, label, x.shape, width).astype(np.int64)   # n 2^w <= 2^63: no wrap
        return d
    d = x
    for s in seeds:
        d = field.sub(d, Prg(s, label).field(field.shape_of(x)))
    return d


def survival_counts(table, n_grid: int, resolution: float):
    """At-risk and event counts per (stratum, group, grid time) for one provider.

    Times are rounded to the nearest multiple of `resolution`; a time past the
    grid is an error naming it."""
    k = np.rint(np.asarray(table.time, dtype=float) / resolution).astype(np.int64)
    if (k >= n_grid).any():
        bad = table.time[np.argmax(k >= n_grid)]
        raise InputError(f"survival.tsv: time {bad} is past the study's grid "
                         f"(max_time = {(n_grid - 1) * resolution:g}); raise [survival] max_time")
    strata_col = table.stratum if table.stratum is not None else np.array(["all"] * len(k))
    strata = sorted(set(strata_col.tolist()))
    groups = sorted(set(np.asarray(table.group).tolist()))
    counts = np.zeros((len(strata), len(groups), n_grid, 2), dtype=np.int64)
    for a, st in enumerate(strata):
        for g, gr in enumerate(groups):
            sel = (strata_col == st) & (np.asarray(table.group) == gr)
            ki, ev = k[sel], np.asarray(table.event)[sel]
            leave = np.bincount(ki, minlength=n_grid)
            counts[a, g, :, 0] = leave[::-1].cumsum()[::-1]          # at risk: time >= t
            counts[a, g, :, 1] = np.bincount(ki[ev == 1], minlength=n_grid)
    return counts, strata, groups


def impute_site_mean(dosage: np.ndarray, missing: np.ndarray, f: int):
    """The provider's mean-imputed dosage in fixed point, and the imputed value per SNP.

    mean_j = round(2^f * Σ_obs d_ij / n_obs_j) (0 when nothing is observed) is this
    site's own ALT dosage mean; the imputed matrix holds d_ij 2^f where observed
    and mean_j where missing, so ``Σ_i imputed_ij = 2^f alt_j + mean_j miss_j``
    exactly and the nodes recover exact ALT counts from it.

    Returns (field array (n, m), int64 array (m,))."""
    d = dosage.astype(np.int64)
    m = missing.astype(bool)
    n_obs = (~m).sum(axis=0)
    alt = d.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_obs > 0, np.rint(alt * float(2 ** f) / np.maximum(n_obs, 1)), 0).astype(np.int64)
    values = np.where(m, mean[None, :], d << f)
    return field.from_int(values), mean


def site_arrays(site, params, block_snps: int, n_grid: int, resolution: float):
    """(meta, generator of (name, field array)) for everything the site holds."""
    meta = {"n_samples": int(site.n_samples), "tables": {}}
    f = params.f

    def fixed(values):
        return field.encode_fixed(np.nan_to_num(values, nan=0.0), params, f)

    def gen():
        if site.has_genotypes:
            for b, (j0, j1) in enumerate(meta["blocks"]):
                enc = encode_genotypes(site.genotype_block(j0, j1))
                imputed, mean = impute_site_mean(enc.dosage, enc.missing, f)
                yield f"geno/imputed/{b}", imputed
                yield f"geno/mean/{b}", field.from_int(mean)
                yield f"geno/missing/{b}", enc.missing.astype(np.int64)      # narrow masks (int64)
                yield f"geno/het/{b}", enc.het.astype(np.int64)
        phen = site.phenotypes()
        if phen:
            kinds = site.phenotype_kinds()
            for name, values in phen.items():
                miss = np.isnan(values)
                if kinds[name] == "binary":
                    yield f"pheno/{name}", field.from_int(np.where(miss, 0, values).astype(np.int64))
                else:
                    yield f"pheno/{name}", fixed(values)
                yield f"pheno_missing/{name}", field.from_int(miss.astype(np.int64))
        for table, getter in (("covariates", site.covariates), ("features", site.features)):
            data = getter()
            if not data:
                continue
            if table == "features":
                names, matrix = list(data.names), np.asarray(data.values, dtype=float)
            else:
                names = list(data)
                matrix = np.column_stack([data[n] for n in names]) if names else np.zeros((site.n_samples, 0))
            yield table, fixed(matrix)
            yield f"{table}_missing", field.from_int(np.isnan(matrix).any(axis=1).astype(np.int64))
        surv = site.survival()
        if surv is not None:
            counts, _, _ = survival_counts(surv, n_grid, resolution)
            yield "survival", field.from_int(counts)

    if site.has_genotypes:
        m = site.n_snps
        meta["n_snps"] = int(m)
        meta["blocks"] = [[j, min(m, j + block_snps)] for j in range(0, m, block_snps)]
    phen = site.phenotypes()
    if phen:
        meta["tables"]["phenotypes"] = {"kinds": site.phenotype_kinds()}
    cov = site.covariates()
    if cov:
        meta["tables"]["covariates"] = {"names": list(cov)}
    feats = site.features()
    if feats is not None:
        meta["tables"]["features"] = {"names": list(feats.names)}
    surv = site.survival()
    if surv is not None:
        _, strata, groups = survival_counts(surv, n_grid, resolution)
        meta["tables"]["survival"] = {"strata": strata, "groups": groups, "n_grid": n_grid,
                                      "resolution": resolution}
    return meta, gen()


def submit(study, site_dir, provider: str, *, key_file=None, replace: bool = False,
           pheno_01: bool = False, timeout: float = 60.0, progress=None) -> dict:
    """Submit one site to every node of the study; returns a summary dict."""
    if provider not in study.providers:
        raise InputError(f"{provider!r} is not a provider of study {study.path} "
                         f"(providers: {', '.join(study.providers) or 'none'})")
    site = read_site(site_dir, pheno_01=pheno_01)
    n = study.n_nodes
    n_grid = int(study.survival_max_time / study.survival_resolution) + 1
    meta, arrays = site_arrays(site, study.params, study.block_snps, n_grid, study.survival_resolution)
    submission = f"{provider}-{secrets.token_hex(6)}"
    seeds = [new_seed() for _ in range(n)]
    meta.update(provider=provider, submission=submission)
    snps_text = SnpInfo.to_text(site.snps) if site.has_genotypes else ""

    client = ClientContext(study, provider, key_file)
    nodes = [client.node(i, timeout) for i in range(n)]
    dealer = client.dealer(timeout)
    begun = []
    try:
        for c in nodes + [dealer]:
            c.call({"cmd": "ping"}, timeout=min(timeout, 10.0))
        for i, c in enumerate(nodes):
            c.call({"cmd": "submit_begin", "meta": meta, "seed": seeds[i].hex(), "replace": replace},
                   np.frombuffer(snps_text.encode(), dtype=np.uint8), is_field=False)
            begun.append(c)
        dealer.call({"cmd": "register", "submission": submission, "seeds": [s.hex() for s in seeds]})
        sent = 0
        for name, x in arrays:
            d = _mask(x, seeds, array_label(submission, name))
            for c in nodes:
                c.send({"cmd": "submit_array", "name": name}, d, is_field=d.dtype != np.int64)
            for c in nodes:
                reply, _ = c.recv()
                if not reply.get("ok"):
                    raise ServiceError(f"{c.peer}: {reply.get('error')}")
            sent += d.nbytes
            if progress:
                progress(name, sent)
        for c in nodes:
            c.call({"cmd": "submit_commit"})
        begun = []
        log.info("submitted %s as %s: %d samples, %d SNPs", site_dir, submission, site.n_samples,
                 meta.get("n_snps", 0))
        return {"submission": submission, "n_samples": site.n_samples, "n_snps": meta.get("n_snps", 0),
                "tables": sorted(meta["tables"]), "bytes_per_node": sent}
    finally:
        for c in begun:
            try:
                c.send({"cmd": "submit_abort"})
            except Exception:  # noqa: BLE001 - best effort
                pass
        client.close()

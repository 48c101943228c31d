"""Masked submissions held in memory, for protocol tests without daemons.

``make_submissions`` does what parties.provider does for a site (site-mean
imputation, masking with fresh per-node seeds under the same labels) and
returns objects that parties.cohort.StoredCohort reads like stored
submissions, plus the seeds to hand the harness (``extra_seeds``).
"""
from __future__ import annotations

import numpy as np

from mpc import field
from mpc.params import Params
from mpc.prg import new_seed
from parties.cohort import SnpInfo, array_label
from parties.provider import _mask, impute_site_mean, survival_counts


class MemorySubmission:
    def __init__(self, meta: dict, arrays: dict, snps_text: str):
        self.meta = meta
        self.arrays = arrays
        self.snps_text = snps_text
        self.provider = meta["provider"]

    def __getitem__(self, key):
        return self.meta[key]

    def get(self, key, default=None):
        return self.meta.get(key, default)

    def has(self, name):
        return name in self.arrays

    def array(self, name):
        return self.arrays[name]

    def text(self, name):
        assert name == "snps.tsv"
        return self.snps_text


class _Snps:
    def __init__(self, m, chrom=None, pos=None):
        self.chrom = np.array(chrom if chrom is not None else ["1"] * m, dtype=str)
        self.pos = np.array(pos if pos is not None else np.arange(1, m + 1) * 1000, dtype=np.int64)
        self.id = np.array([f"rs{j + 1}" for j in range(m)])
        self.ref = np.array(["A"] * m)
        self.alt = np.array(["G"] * m)


def make_submissions(genotypes, n_nodes: int, *, params: Params | None = None, block_snps: int = 64,
                     phenotypes=None, covariates=None, features=None, survival=None,
                     chrom=None, pos=None, n_grid=None, resolution=1.0):
    """Per-provider masked arrays.

    Parameters
    ----------
    genotypes : list of int8 arrays (n_p, M), ALT dosage with -1 for missing
    phenotypes : list of dict name -> (values float with NaN, kind) per provider
    covariates, features : list of (names, float matrix (n_p, C) with NaN)
    survival : list of SurvivalTable-like objects (time, event, group, stratum)

    Returns
    -------
    (list of MemorySubmission, extra_seeds dict submission -> n seeds)
    """
    params = params or Params()
    f = params.f
    subs, seeds_by = [], {}
    m = genotypes[0].shape[1] if genotypes else 0
    snps_text = SnpInfo.to_text(_Snps(m, chrom, pos)) if m else ""
    for p, g in enumerate(genotypes):
        name = f"site{p + 1}"
        submission = f"{name}-mem{p}"
        seeds = [new_seed() for _ in range(n_nodes)]
        seeds_by[submission] = seeds
        g = np.asarray(g)
        missing = (g < 0).astype(np.uint8)
        dosage = np.where(g < 0, 0, g).astype(np.uint8)
        het = ((g == 1)).astype(np.uint8)
        arrays, tables = {}, {}

        def put(label, x):
            arrays[label] = _mask(x, seeds, array_label(submission, label))

        blocks = [[j, min(m, j + block_snps)] for j in range(0, m, block_snps)]
        for b, (j0, j1) in enumerate(blocks):
            imp, mean = impute_site_mean(dosage[:, j0:j1], missing[:, j0:j1], f)
            put(f"geno/imputed/{b}", imp)
            put(f"geno/mean/{b}", field.from_int(mean))
            put(f"geno/missing/{b}", missing[:, j0:j1].astype(np.int64))
            put(f"geno/het/{b}", het[:, j0:j1].astype(np.int64))
        if phenotypes is not None:
            kinds = {}
            for pname, (values, kind) in phenotypes[p].items():
                miss = np.isnan(values)
                kinds[pname] = kind
                if kind == "binary":
                    put(f"pheno/{pname}", field.from_int(np.where(miss, 0, values).astype(np.int64)))
                else:
                    put(f"pheno/{pname}", field.encode_fixed(np.nan_to_num(values), params, f))
                put(f"pheno_missing/{pname}", field.from_int(miss.astype(np.int64)))
            tables["phenotypes"] = {"kinds": kinds}
        for table, data in (("covariates", covariates), ("features", features)):
            if data is None:
                continue
            names, matrix = data[p]
            matrix = np.asarray(matrix, dtype=float).reshape(g.shape[0], len(names))
            put(table, field.encode_fixed(np.nan_to_num(matrix), params, f))
            put(f"{table}_missing", field.from_int(np.isnan(matrix).any(axis=1).astype(np.int64)))
            tables[table] = {"names": list(names)}
        if survival is not None:
            counts, strata, groups = survival_counts(survival[p], n_grid, resolution)
            put("survival", field.from_int(counts))
            tables["survival"] = {"strata": strata, "groups": groups, "n_grid": n_grid,
                                  "resolution": resolution}
        meta = {"provider": name, "submission": submission, "n_samples": int(g.shape[0]),
                "n_snps": int(m), "blocks": blocks, "tables": tables}
        subs.append(MemorySubmission(meta, arrays, snps_text))
    return subs, seeds_by

"""A node's view of the pooled cohort of one job, read from its stored submissions.

Implements protocols.cohort.Cohort.  Every stored array is the public masked
value d = x - a of a provider's data; this node's share of the mask a comes
from its seed for that submission under the label ``<submission>/<array>``
(the provider used the same label), so a genotype block is a masked
SharedArray and products with it reuse d (mpc.beaver).  Blocks are read from
disk (checksum-verified) only when a protocol asks for them.
"""
from __future__ import annotations

import io

import numpy as np

from mpc import field
from mpc.errors import InputError
from mpc.shared import Mask, SharedArray, concatenate
from mpc.triples import MaskSpec, narrow_mask_width


def array_label(submission: str, name: str) -> str:
    return f"{submission}/{name}"


NARROW_PREFIXES = ("geno/missing/", "geno/het/")


def is_narrow(name: str) -> bool:
    """Whether a submitted array is a 0/1 indicator matrix stored with a narrow
    mask (int64 ``x - a``, mpc.triples.MaskSpec.width) rather than as field elements."""
    return name.startswith(NARROW_PREFIXES)


class SnpInfo:
    """Public SNP metadata (chrom, pos, id, ref, alt), parsed from snps.tsv text."""

    def __init__(self, text: str):
        cols = [[] for _ in range(5)]
        for line in io.StringIO(text):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            for c, v in zip(cols, parts):
                c.append(v)
        self.chrom = np.array(cols[0], dtype=str)
        self.pos = np.array(cols[1], dtype=np.int64)
        self.id = np.array(cols[2], dtype=str)
        self.ref = np.array(cols[3], dtype=str)
        self.alt = np.array(cols[4], dtype=str)

    def __len__(self):
        return len(self.id)

    @staticmethod
    def to_text(snps) -> str:
        lines = ["#CHROM\tPOS\tID\tREF\tALT"]
        for row in zip(snps.chrom, snps.pos, snps.id, snps.ref, snps.alt):
            lines.append("\t".join(str(v) for v in row))
        return "\n".join(lines) + "\n"


class StoredCohort:
    """protocols.cohort.Cohort over a node's committed submissions.

    Parameters
    ----------
    ctx : PartyContext
    submissions : list of parties.storage.Submission, in job order
    """

    def __init__(self, ctx, submissions):
        if not submissions:
            raise InputError("no provider has submitted data")
        self.ctx = ctx
        self.subs = list(submissions)
        self.providers = [s.provider for s in self.subs]
        self.sample_counts = [int(s["n_samples"]) for s in self.subs]
        self.n_samples = sum(self.sample_counts)
        geno = [s for s in self.subs if s.get("n_snps")]
        self._geno_ok = len(geno) == len(self.subs)
        if geno:
            self.snps = SnpInfo(geno[0].text("snps.tsv"))
            self.n_snps = int(geno[0]["n_snps"])
            self.blocks = [tuple(b) for b in geno[0]["blocks"]]
        else:
            self.snps, self.n_snps, self.blocks = None, 0, []

    def snps_text(self) -> str:
        """The public SNP list as TSV text (for the analyst's result tables)."""
        return self.subs[0].text("snps.tsv") if self.snps is not None else ""

    # ------------------------------------------------------------ helpers
    def _masked(self, sub, name: str, frac: int = 0) -> SharedArray:
        """A stored array as a masked SharedArray; its d is read from disk only when used."""
        label = array_label(sub["submission"], name)
        info = sub.meta.get("arrays", {}).get(name, {}) if hasattr(sub, "meta") else {}
        if "shape" in info:
            dtype, shape = np.dtype(info["dtype"]), tuple(info["shape"])
        else:
            a = sub.array(name)
            dtype, shape = a.dtype, a.shape
        if dtype == np.int64:
            # x - a under a narrow mask, no limb axis (is_narrow names; data stored before
            # narrow masks existed holds field elements and is read as such below).
            spec = MaskSpec(sub["submission"], label, shape, width=narrow_mask_width(self.ctx.n))
            return SharedArray.from_mask(self.ctx, Mask(spec, loader=lambda: field.from_int(sub.array(name))),
                                         frac)
        spec = MaskSpec(sub["submission"], label, shape[:-1])
        return SharedArray.from_mask(self.ctx, Mask(spec, loader=lambda: sub.array(name)), frac)

    def has(self, table: str) -> bool:
        if table == "genotypes":
            return self._geno_ok
        return all(table in s.get("tables", {}) for s in self.subs)

    def require(self, table: str, what: str) -> None:
        missing = [s.provider for s in self.subs
                   if (table == "genotypes" and not s.get("n_snps"))
                   or (table != "genotypes" and table not in s.get("tables", {}))]
        if missing:
            raise InputError(f"{what} needs {table} from every provider; missing from {', '.join(missing)}")

    # ------------------------------------------------------------ Cohort
    def genotype_block(self, b: int, matrices=("imputed", "missing", "het", "mean")) -> dict:
        self.require("genotypes", "this analysis")
        frac = {"imputed": self.ctx.params.f, "mean": self.ctx.params.f}
        return {m: [self._masked(s, f"geno/{m}/{b}", frac.get(m, 0)) for s in self.subs] for m in matrices}

    def table_names(self, table: str) -> list:
        """Column names every provider has in `table` (phenotypes, covariates, features)."""
        self.require(table, table)
        key = "kinds" if table == "phenotypes" else "names"
        names = [list(s["tables"][table][key]) for s in self.subs]
        return [n for n in names[0] if all(n in other for other in names[1:])]

    def phenotype(self, name: str):
        self.require("phenotypes", f"phenotype {name!r}")
        kinds = {s["tables"]["phenotypes"]["kinds"].get(name) for s in self.subs}
        if None in kinds:
            lacking = [s.provider for s in self.subs if name not in s["tables"]["phenotypes"]["kinds"]]
            raise InputError(f"phenotype {name!r} is missing from {', '.join(lacking)}")
        if len(kinds) != 1:
            raise InputError(f"phenotype {name!r} is binary at some sites and quantitative at others")
        kind = kinds.pop()
        frac = 0 if kind == "binary" else self.ctx.params.f
        values = concatenate([self._masked(s, f"pheno/{name}", frac) for s in self.subs])
        missing = concatenate([self._masked(s, f"pheno_missing/{name}") for s in self.subs])
        return values, missing, kind

    def _matrix_table(self, table: str, names):
        self.require(table, table)
        available = [s["tables"][table]["names"] for s in self.subs]
        names = list(available[0] if names is None else names)
        for s, have in zip(self.subs, available):
            absent = [n for n in names if n not in have]
            if absent:
                raise InputError(f"{table} {', '.join(absent)} missing from {s.provider}")
        parts = []
        for s, have in zip(self.subs, available):
            m = self._masked(s, table, self.ctx.params.f)
            cols = [have.index(n) for n in names]
            parts.append(m if cols == list(range(len(have))) else m[:, cols])
        missing = concatenate([self._masked(s, f"{table}_missing") for s in self.subs])
        return concatenate(parts), missing, names

    def covariates(self, names=None):
        return self._matrix_table("covariates", names)

    def features(self, names=None):
        return self._matrix_table("features", names)

    def survival(self):
        self.require("survival", "the log-rank test")
        metas = [s["tables"]["survival"] for s in self.subs]
        grid = metas[0]["n_grid"], metas[0]["resolution"]
        for s, m in zip(self.subs, metas):
            if (m["n_grid"], m["resolution"]) != grid:
                raise InputError(f"{s.provider} used a different survival time grid")
        strata = sorted({x for m in metas for x in m["strata"]})
        groups = sorted({x for m in metas for x in m["groups"]})
        total = None
        for s, m in zip(self.subs, metas):
            part = self._masked(s, "survival")
            # Place this provider's strata x groups into the pooled layout (local, exact).
            placed = SharedArray.zeros(self.ctx, (len(strata), len(groups), grid[0], 2))
            share = placed.share
            ps = part.share
            for a, st in enumerate(m["strata"]):
                for g, gr in enumerate(m["groups"]):
                    share[strata.index(st), groups.index(gr)] = ps[a, g]
            total = placed if total is None else total + placed
        times = np.arange(grid[0]) * grid[1]
        return total, strata, groups, times

"""Helpers for comparing with PLINK 2: pooled site files, running plink2, reading its tables."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from bed_reader import open_bed, to_bed

PLINK2 = shutil.which("plink2")


def require_plink2() -> str:
    assert PLINK2, "plink2 is required for the tests (scripts/bootstrap.sh --test installs it)"
    return PLINK2


def merge_sites(sites, out_prefix: Path) -> Path:
    """Concatenate the sites' .bed files by individuals (same SNPs) into out_prefix.bed/.bim/.fam."""
    parts, fam = [], []
    for s in sites:
        s = Path(s)
        with open_bed(s / "genotypes.bed", count_A1=True) as bed:
            parts.append(bed.read(dtype="float32"))
        fam += (s / "genotypes.fam").read_text().splitlines()
    val = np.vstack(parts)
    out_prefix = Path(out_prefix)
    shutil.copy(Path(sites[0]) / "genotypes.bim", f"{out_prefix}.bim")
    Path(f"{out_prefix}.fam").write_text("\n".join(fam) + "\n")
    bim = np.loadtxt(f"{out_prefix}.bim", dtype=str, ndmin=2)
    to_bed(f"{out_prefix}.bed", val, properties={
        "iid": [f.split()[1] for f in fam], "fid": [f.split()[0] for f in fam],
        "sid": bim[:, 1], "chromosome": bim[:, 0], "bp_position": bim[:, 3].astype(int),
        "allele_1": bim[:, 4], "allele_2": bim[:, 5]}, count_A1=True)
    return out_prefix


def run(args, cwd=None) -> None:
    out = subprocess.run([require_plink2()] + [str(a) for a in args] + ["--allow-extra-chr"],
                         capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"plink2 {' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")


def read_table(path) -> np.ndarray:
    return np.genfromtxt(path, dtype=None, names=True, comments=None, encoding=None, delimiter="\t")


def read_ids(path) -> list:
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]

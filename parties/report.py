"""Analyst-side result files: PLINK-style tables and plots (plaintext, after reconstruction)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

CHI2_1_MEDIAN = float(stats.chi2.ppf(0.5, 1))   # 0.4549...


def neglog10_p(chisq: np.ndarray) -> np.ndarray:
    """-log10 P for 1-df chi-squares, finite for huge statistics (norm.logsf, not chi2.sf)."""
    chisq = np.asarray(chisq, dtype=float)
    with np.errstate(invalid="ignore"):
        return -(stats.norm.logsf(np.sqrt(chisq)) + math.log(2.0)) / math.log(10.0)


def genomic_control(chisq: np.ndarray) -> float:
    """λ = median(CHISQ) / median of chi2(1)."""
    finite = np.asarray(chisq, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite) / CHI2_1_MEDIAN) if finite.size else float("nan")


def fmt(v, digits=6) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "NA"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}"
    return str(v)


def manhattan(path, chrom, pos, chisq, title: str, threshold: float = 5e-8) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chrom = np.asarray(chrom).astype(str)
    pos = np.asarray(pos, dtype=float)
    y = neglog10_p(chisq)
    ok = np.isfinite(y)
    order = sorted(set(chrom[ok]), key=lambda c: (0, int(c)) if c.isdigit() else (1, c))
    fig, ax = plt.subplots(figsize=(11, 4))
    offset, ticks, labels = 0.0, [], []
    for i, c in enumerate(order):
        sel = ok & (chrom == c)
        x = pos[sel] - pos[sel].min() + offset
        ax.scatter(x, y[sel], s=4, color=("#1f4e79" if i % 2 == 0 else "#7fa7c9"), rasterized=True)
        ticks.append(offset + (x.max() - offset) / 2 if x.size else offset)
        labels.append(c)
        offset = (x.max() if x.size else offset) + 5e6
    ax.axhline(-math.log10(threshold), color="#c0392b", lw=0.8, ls="--")
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("chromosome")
    ax.set_ylabel("-log10 P")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def qq(path, chisq, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = np.sort(neglog10_p(chisq)[np.isfinite(neglog10_p(chisq))])[::-1]
    n = obs.size
    exp = -np.log10((np.arange(1, n + 1) - 0.5) / n)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(exp, obs, s=5, color="#1f4e79", rasterized=True)
    top = max(exp.max() if n else 1, obs.max() if n else 1)
    ax.plot([0, top], [0, top], color="#c0392b", lw=0.8)
    ax.set_xlabel("expected -log10 P")
    ax.set_ylabel("observed -log10 P")
    ax.set_title(f"{title} (λ = {genomic_control(chisq):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scree(path, eigenvalues, title: str) -> None:
    """PCA eigenvalues (PLINK's scale) against their index."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = np.asarray(eigenvalues, dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(np.arange(1, v.size + 1), v, marker="o", color="#1f4e79")
    ax.set_xlabel("PC")
    ax.set_ylabel("eigenvalue")
    ax.set_xticks(np.arange(1, v.size + 1))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pc_scatter(path, pc1, pc2, groups, title: str) -> None:
    """PC2 against PC1, one colour per group (site)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = np.asarray(groups).astype(str)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for g in dict.fromkeys(groups.tolist()):
        sel = groups == g
        ax.scatter(pc1[sel], pc2[sel], s=6, label=g, rasterized=True)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""Reading and validating a data provider's site folder.

A *site* is one provider's folder.  Every file in it is optional; a site
submits what it has:

=====================  ====================================================
``genotypes.bed/.bim/.fam``  PLINK 1 binary fileset (SNP-major)
``genotypes.vcf.gz``   VCF (bgzip or gzip; ``genotypes.vcf`` also accepted),
                       bi-allelic records only, read with cyvcf2
``phenotypes.tsv``     header ``FID IID`` (or ``#FID IID``, ``IID``,
                       ``#IID``) then named phenotype columns
``covariates.tsv``     same layout, named covariate columns
``survival.tsv``       ``IID TIME EVENT GROUP [STRATUM]``
``features.tsv``       ``IID`` then named numeric clinical features
=====================  ====================================================

Conventions, the same in every file:

* Samples are matched by IID (the FID column, when present, is ignored), so
  IIDs must be unique within a site.
* The site's samples are the genotype samples (``.fam`` or VCF order).  A site
  without genotypes takes its samples from the first table it has, in the
  order phenotypes, covariates, features, survival.  Every table must cover
  exactly those samples: an unknown IID, a sample without a row or a duplicate
  row is an error (write ``-9`` or ``NA`` for a missing value instead of
  dropping the row).  Tables are returned aligned to :attr:`Site.sample_ids`.
* ``-9``, ``NA``, ``nan`` and the empty field mean *missing* (NaN).  A
  table whose header contains a tab is split on tabs (so an empty field is
  possible); otherwise on runs of white space, as PLINK does.
* Phenotypes follow PLINK 2: a column whose non-missing values all lie in
  {0, 1, 2} is case/control with 1 = control, 2 = case, 0 = missing; with
  ``pheno_01=True`` (PLINK 2's ``--1``) a column whose values all lie in
  {0, 1} is case/control with 0 = control, 1 = case.  Binary phenotypes are
  returned as 0.0 (control) / 1.0 (case) / NaN.  Any other column is
  quantitative.
* Genotypes are ALT-allele dosages.  For a ``.bim``, ALT is column 5 (A1)
  and REF column 6 (A2), as PLINK 2 reads a ``.bed``; for a VCF, the
  record's REF/ALT.  Chromosome names lose a leading ``chr``.

Tables, the ``.fam``/``.bim`` and the ``.bed`` header and size are read and
checked when the site is read (:func:`read_site`), so a bad folder fails before
anything is submitted; genotype blocks are read on demand
(:meth:`Site.genotype_block`), so memory stays bounded by one block.  Arrays
returned from tables are read-only (copy before changing them in place).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mpc.errors import InputError

BED_MAGIC = b"\x6c\x1b"
"""The first two bytes of every PLINK 1 .bed file."""

BED_SNP_MAJOR = 0x01
"""Third byte of a SNP-major .bed (the only layout PLINK 1.9 and 2 write)."""

MISSING_WORDS = frozenset({"", "na", "nan"})
"""Missing-value spellings (compared in lower case); the number -9 is missing too."""

MISSING_NUMBER = -9.0

GENOTYPE_MISSING = -1
"""Missing call in a genotype block."""

FILE_NAMES = {
    "bed": "genotypes.bed",
    "bim": "genotypes.bim",
    "fam": "genotypes.fam",
    "vcf": ("genotypes.vcf.gz", "genotypes.vcf"),
    "phenotypes": "phenotypes.tsv",
    "covariates": "covariates.tsv",
    "survival": "survival.tsv",
    "features": "features.tsv",
}

SURVIVAL_COLUMNS = ("TIME", "EVENT", "GROUP")
SURVIVAL_OPTIONAL = ("STRATUM",)


# ---------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------

def _frozen_array(values, dtype) -> np.ndarray:
    out = np.array(values, dtype=dtype)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class SnpTable:
    """The SNP list of a site, in file order.

    Parameters
    ----------
    chrom : str array, shape (n_snps,)
        Chromosome names (a leading ``chr`` removed by the readers).
    pos : int64 array, shape (n_snps,)
        Base-pair positions.
    id : str array, shape (n_snps,)
        Variant IDs (``.`` where the source has none).
    ref, alt : str arrays, shape (n_snps,)
        Reference and alternative allele; dosages count ``alt``.

    Notes
    -----
    Arrays are read-only.  Two tables are compared with :meth:`first_mismatch`
    or :meth:`fingerprint`, not ``==``.
    """

    chrom: np.ndarray
    pos: np.ndarray
    id: np.ndarray
    ref: np.ndarray
    alt: np.ndarray

    FIELDS = ("id", "chrom", "pos", "ref", "alt")

    def __post_init__(self):
        for name in self.FIELDS:
            dtype = np.int64 if name == "pos" else np.str_
            value = _frozen_array(getattr(self, name), dtype)
            if value.ndim != 1:
                raise InputError(f"SnpTable.{name} must be one-dimensional, got shape {value.shape}")
            object.__setattr__(self, name, value)
        lengths = {name: len(getattr(self, name)) for name in self.FIELDS}
        if len(set(lengths.values())) != 1:
            raise InputError(f"SnpTable fields have different lengths: {lengths}")

    def __len__(self) -> int:
        return len(self.pos)

    def __repr__(self) -> str:
        return f"SnpTable(n_snps={len(self)}, fingerprint={self.fingerprint()[:12]}...)"

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the whole table: chromosome, position, ID, REF, ALT.

        Two sites agree on their SNP list exactly when their fingerprints are
        equal.  The table is serialised as JSON lists, which is unambiguous
        whatever characters the fields hold.
        """
        payload = json.dumps(
            {
                "format": "mpcgwas.SnpTable.v1",
                "chrom": self.chrom.tolist(),
                "pos": self.pos.tolist(),
                "id": self.id.tolist(),
                "ref": self.ref.tolist(),
                "alt": self.alt.tolist(),
            },
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def first_mismatch(self, other: SnpTable, labels: tuple[str, str] = ("this", "other")) -> str | None:
        """Describe the first difference between two SNP tables.

        Parameters
        ----------
        other : SnpTable
        labels : (str, str)
            How to call ``self`` and ``other`` in the message (site names).

        Returns
        -------
        str or None
            None when the tables are identical; otherwise a message naming the
            first differing SNP index (0-based) and every differing field at it,
            and the SNP counts when they differ.
        """
        a, b = labels
        n = min(len(self), len(other))
        parts = []
        if len(self) != len(other):
            parts.append(f"SNP counts differ: {len(self)} ({a}) vs {len(other)} ({b})")
        differs = np.zeros(n, dtype=bool)
        for name in self.FIELDS:
            differs |= getattr(self, name)[:n] != getattr(other, name)[:n]
        if differs.any():
            i = int(np.argmax(differs))
            fields = []
            for name in self.FIELDS:
                mine, theirs = getattr(self, name)[i].item(), getattr(other, name)[i].item()
                if mine != theirs:
                    fields.append(f"{name} {mine!r} ({a}) vs {theirs!r} ({b})")
            parts.append(
                f"first difference at SNP index {i} "
                f"({self.id[i]} at {self.chrom[i]}:{self.pos[i]} in {a}): " + ", ".join(fields)
            )
        elif parts:
            parts.append(f"the first {n} SNPs agree")
        return "; ".join(parts) if parts else None


@dataclass(frozen=True, eq=False)
class SurvivalTable:
    """Survival records of a site, one row per sample (aligned to the site's samples).

    Parameters
    ----------
    iid : str array, shape (n,)
    time : float64 array, shape (n,)
        Follow-up time, finite and >= 0 (days in simulated data).
    event : int8 array, shape (n,)
        1 = event observed, 0 = censored.  Only 0/1 is accepted (no PLINK-style
        1/2 coding: an event indicator is not a case/control phenotype).
    group : str array, shape (n,)
        Group label compared by the log-rank test.
    stratum : str array, shape (n,), or None
        Stratum label when the file has a STRATUM column.
    """

    iid: np.ndarray
    time: np.ndarray
    event: np.ndarray
    group: np.ndarray
    stratum: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.iid)


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Numeric clinical features of a site (aligned to the site's samples).

    Parameters
    ----------
    iid : str array, shape (n,)
    names : tuple of str, length n_features
    values : float64 array, shape (n, n_features)
        NaN where missing.
    """

    iid: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray


class EncodedGenotypes(NamedTuple):
    """The three indicator-style matrices a provider shares (uint8, the block's shape).

    A named tuple so that ``dosage, missing, het = encode_genotypes(block)`` works.
    """

    dosage: np.ndarray
    """ALT dosage 0/1/2, 0 where missing."""
    missing: np.ndarray
    """1 where the call is missing."""
    het: np.ndarray
    """1 where the call is heterozygous (dosage 1, not missing)."""


def encode_genotypes(block: np.ndarray) -> EncodedGenotypes:
    """Split a genotype block into dosage, missing and heterozygous indicators.

    These make quality-control counts linear: missing calls per SNP are a
    column sum of ``missing``, allele counts a column sum of ``dosage``,
    heterozygote counts a column sum of ``het``.

    Parameters
    ----------
    block : int8 array, shape (n_samples, n_snps)
        ALT dosages 0/1/2 and -1 for missing, as :meth:`Site.genotype_block`.

    Returns
    -------
    EncodedGenotypes
        ``(dosage, missing, het)``, three uint8 arrays of the block's shape.
    """
    block = np.asarray(block)
    if block.dtype != np.int8:
        raise InputError(f"encode_genotypes: block must be int8, got {block.dtype}")
    bad = (block < GENOTYPE_MISSING) | (block > 2)
    if bad.any():
        where = tuple(int(k) for k in np.argwhere(bad)[0])
        raise InputError(
            f"encode_genotypes: values must be 0, 1, 2 or -1 (missing); "
            f"found {int(block[where])} at {where}"
        )
    missing = block == GENOTYPE_MISSING
    dosage = np.where(missing, 0, block).astype(np.uint8)
    het = (block == 1).view(np.uint8)
    return EncodedGenotypes(dosage=dosage, missing=missing.view(np.uint8), het=het)


def check_snps_agree(tables: dict[str, SnpTable]) -> str:
    """Check that every site has the same SNP list (IDs, positions, alleles, order).

    Parameters
    ----------
    tables : dict
        Site name -> :class:`SnpTable`.

    Returns
    -------
    str
        The common fingerprint (:meth:`SnpTable.fingerprint`).

    Raises
    ------
    InputError
        Naming the first site, the disagreeing site and the first mismatch.
    """
    if not tables:
        raise InputError("check_snps_agree: no SNP tables given")
    names = list(tables)
    first = names[0]
    reference = tables[first]
    fingerprint = reference.fingerprint()
    for name in names[1:]:
        table = tables[name]
        if table.fingerprint() == fingerprint:
            continue
        message = reference.first_mismatch(table, labels=(first, name))
        raise InputError(
            f"SNP lists of sites {first!r} and {name!r} disagree: {message}. "
            "Every site must list the same SNPs with the same IDs, positions and "
            "alleles, in the same order."
        )
    return fingerprint


# ---------------------------------------------------------------------------
# Low-level readers
# ---------------------------------------------------------------------------

def _normalise_chrom(name: str) -> str:
    return name[3:] if name[:3].lower() == "chr" and len(name) > 3 else name


def _text_lines(path: Path):
    """Yield (line number, line without its end-of-line) for a text file."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            for lineno, line in enumerate(handle, start=1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None


def _read_fam(path: Path) -> np.ndarray:
    """IIDs of a .fam file (6 white-space separated columns), unique."""
    iids: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in _text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputError(
                f"{path}, line {lineno}: expected 6 columns (FID IID PAT MAT SEX PHENO), "
                f"found {len(fields)}"
            )
        iid = fields[1]
        if iid in first_line:
            raise InputError(
                f"{path}, line {lineno}: duplicate sample ID (IID) {iid!r}, "
                f"already on line {first_line[iid]}"
            )
        first_line[iid] = lineno
        iids.append(iid)
    if not iids:
        raise InputError(f"{path}: no samples")
    return _frozen_array(iids, np.str_)


def _read_bim(path: Path) -> SnpTable:
    """SNP table of a .bim file: ALT = column 5 (A1), REF = column 6 (A2)."""
    chrom, pos, ids, ref, alt = [], [], [], [], []
    for lineno, line in _text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputError(
                f"{path}, line {lineno}: expected 6 columns (CHROM ID CM POS A1 A2), "
                f"found {len(fields)}"
            )
        try:
            position = int(fields[3])
        except ValueError:
            raise InputError(
                f"{path}, line {lineno}, column 4 (POS): position {fields[3]!r} is not an integer"
            ) from None
        if position < 0:
            raise InputError(f"{path}, line {lineno}, column 4 (POS): negative position {position}")
        try:
            float(fields[2])
        except ValueError:
            raise InputError(
                f"{path}, line {lineno}, column 3 (CM): genetic position {fields[2]!r} is not a number"
            ) from None
        chrom.append(_normalise_chrom(fields[0]))
        ids.append(fields[1])
        pos.append(position)
        alt.append(fields[4])
        ref.append(fields[5])
    if not pos:
        raise InputError(f"{path}: no SNPs")
    return SnpTable(chrom=chrom, pos=pos, id=ids, ref=ref, alt=alt)


def _check_bed(path: Path, n_samples: int, n_snps: int, fam: Path, bim: Path) -> None:
    """Magic bytes, SNP-major mode and exact size of a .bed file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(3)
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    if len(header) < 3 or header[:2] != BED_MAGIC:
        raise InputError(
            f"{path}: not a PLINK 1 .bed file (the first bytes must be 6c 1b, "
            f"found {header[:2].hex(' ') or 'an empty file'})"
        )
    if header[2] != BED_SNP_MAJOR:
        raise InputError(
            f"{path}: mode byte {header[2]:#04x} is not SNP-major (0x01); "
            "rewrite it with plink2 --make-bed"
        )
    expected = 3 + n_snps * math.ceil(n_samples / 4)
    if size != expected:
        what = "truncated" if size < expected else "too long"
        raise InputError(
            f"{path}: {what}: {size} bytes, expected {expected} "
            f"(3 + {n_snps} SNPs in {bim.name} x ceil({n_samples} samples in {fam.name} / 4))"
        )


class _BedSource:
    """Blocks of ALT dosages from a checked SNP-major .bed file."""

    def __init__(self, path: Path, n_samples: int, n_snps: int):
        self.path = path
        self.n_samples = n_samples
        self.n_snps = n_snps

    def read(self, j0: int, j1: int) -> np.ndarray:
        from bed_reader import open_bed

        # bed-reader counts allele 1 (A1, .bim column 5 = ALT) by default and
        # gives -127 for a missing call as int8.  Passing the counts keeps it
        # from re-reading the .fam/.bim we have already parsed.
        with open_bed(self.path, iid_count=self.n_samples, sid_count=self.n_snps) as bed:
            block = bed.read(index=np.s_[:, j0:j1], dtype="int8", order="C")
        block[block == -127] = GENOTYPE_MISSING
        return block


def _open_vcf(path: Path):
    try:
        from cyvcf2 import VCF
    except ImportError:  # pragma: no cover - cyvcf2 is an optional dependency
        raise InputError(f"{path}: reading VCF needs cyvcf2 (pip install mpcgwas[vcf])") from None
    try:
        return VCF(str(path), gts012=True, lazy=True)
    except Exception as err:  # cyvcf2 raises plain Exception/OSError on bad files
        raise InputError(f"{path}: cannot be read as VCF ({err})") from None


def _vcf_record_name(path: Path, line: int, record) -> str:
    return f"{path}, line {line} ({record.CHROM}:{record.POS} {record.ID or '.'})"


def _vcf_header_line_count(path: Path) -> int:
    """Number of '#' lines at the top of a VCF (for line numbers in messages).

    htslib's own header text is no use here: it adds lines (FILTER=PASS, contigs).
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    count = 0
    try:
        with opener(path, "rb") as handle:
            for line in handle:
                if not line.startswith(b"#"):
                    break
                count += 1
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: cannot be read as VCF ({err})") from None
    return count


def _read_vcf_header_and_snps(path: Path) -> tuple[np.ndarray, SnpTable, int]:
    """Samples, SNP table and number of header lines of a VCF."""
    reader = _open_vcf(path)
    try:
        samples = list(reader.samples)
        header_lines = _vcf_header_line_count(path)
        seen: dict[str, int] = {}
        for k, iid in enumerate(samples):
            if iid in seen:
                raise InputError(
                    f"{path}: duplicate sample ID {iid!r} (header columns {seen[iid] + 10} and {k + 10})"
                )
            seen[iid] = k
        if not samples:
            raise InputError(f"{path}: no samples in the header")
        chrom, pos, ids, ref, alt = [], [], [], [], []
        for k, record in enumerate(reader, start=1):
            alts = record.ALT
            if len(alts) > 1:
                raise InputError(
                    f"{_vcf_record_name(path, header_lines + k, record)}: multi-allelic record "
                    f"(ALT {','.join(alts)}); only bi-allelic records are supported "
                    "(split them with bcftools norm -m -any, or drop them)"
                )
            chrom.append(_normalise_chrom(record.CHROM))
            pos.append(record.POS)
            ids.append(record.ID or ".")
            ref.append(record.REF)
            alt.append(alts[0] if alts else ".")
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"{path}: cannot be read as VCF ({err})") from None
    finally:
        reader.close()
    if not pos:
        raise InputError(f"{path}: no variant records")
    return _frozen_array(samples, np.str_), SnpTable(chrom=chrom, pos=pos, id=ids, ref=ref, alt=alt), header_lines


class _VcfSource:
    """Blocks of ALT dosages from a VCF, read forwards with a cursor.

    Reading blocks in increasing order costs one pass over the file; asking
    for an earlier block reopens it.
    """

    def __init__(self, path: Path, n_samples: int, n_snps: int, header_lines: int):
        self.path = path
        self.n_samples = n_samples
        self.n_snps = n_snps
        self.header_lines = header_lines
        self._reader = None
        self._iterator = None
        self._next = 0

    def _rewind(self):
        if self._reader is not None:
            self._reader.close()
        self._reader = _open_vcf(self.path)
        self._iterator = iter(self._reader)
        self._next = 0

    def _next_record(self):
        try:
            record = next(self._iterator)
        except StopIteration:
            raise InputError(
                f"{self.path}: ended after {self._next} records, expected {self.n_snps} "
                "(the file changed while it was being read?)"
            ) from None
        self._next += 1
        return record

    def _dosage(self, record) -> np.ndarray:
        line = self.header_lines + self._next
        genotype = record.genotype
        if genotype is None:
            raise InputError(f"{_vcf_record_name(self.path, line, record)}: no GT field")
        # genotype.array() is a fresh (n_samples, ploidy + 1) int16 array:
        # allele indices, -1 for a missing allele, -2 past a haploid call's end,
        # and the phasing flag last.  (gt_types would do, but it reuses one
        # buffer across records and reports half-calls such as 0/. as HOM_REF.)
        alleles = genotype.array()[:, :-1]
        if alleles.shape[1] > 2 and (alleles[:, 2:] != -2).any():
            raise InputError(f"{_vcf_record_name(self.path, line, record)}: ploidy above 2")
        if (alleles > 1).any():
            raise InputError(
                f"{_vcf_record_name(self.path, line, record)}: allele index above 1 "
                "in a bi-allelic record"
            )
        first = alleles[:, 0]
        second = alleles[:, 1] if alleles.shape[1] > 1 else np.full_like(first, -2)
        haploid = second == -2
        # A haploid call counts as homozygous, as PLINK stores it; a half-call
        # (0/. or ./1) is missing, as plink2 --vcf-half-call missing.
        dosage = np.where(haploid, 2 * first, first + second)
        missing = (first < 0) | ((second < 0) & ~haploid)
        dosage[missing] = GENOTYPE_MISSING
        return dosage.astype(np.int8)

    def read(self, j0: int, j1: int) -> np.ndarray:
        if self._reader is None or j0 < self._next:
            self._rewind()
        try:
            while self._next < j0:
                self._next_record()
            block = np.empty((self.n_samples, j1 - j0), dtype=np.int8)
            for j in range(j1 - j0):
                block[:, j] = self._dosage(self._next_record())
        except InputError:
            self._reader.close()
            self._reader = None
            raise
        return block


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _RawTable:
    """A parsed table: data column names, IIDs, line numbers and cells (strings)."""

    path: Path
    columns: tuple[str, ...]
    iids: tuple[str, ...]
    lines: tuple[int, ...]
    cells: tuple[tuple[str, ...], ...]
    first_column: int
    """1-based number of the first data column in the file (for messages)."""

    def column(self, k: int) -> list[str]:
        return [row[k] for row in self.cells]

    def where(self, row: int, k: int) -> str:
        return f"{self.path}, line {self.lines[row]}, column {self.first_column + k} ({self.columns[k]})"


def _split(line: str, tabs: bool) -> list[str]:
    return [field.strip() for field in line.split("\t")] if tabs else line.split()


def _read_raw_table(path: Path, need_columns: bool = True) -> _RawTable:
    """Header, ID columns and cells of a PLINK-style table."""
    header = None
    tabs = False
    iids: list[str] = []
    lines: list[int] = []
    cells: list[tuple[str, ...]] = []
    first_line: dict[str, int] = {}
    n_id = 0
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        if header is None:
            tabs = "\t" in line
            header = _split(line, tabs)
            names = [name.upper() for name in header]
            if names[0] in ("FID", "#FID") and len(names) > 1 and names[1] == "IID":
                n_id = 2
            elif names[0] in ("IID", "#IID"):
                n_id = 1
            else:
                raise InputError(
                    f"{path}, line {lineno}: the header must start with 'FID IID', "
                    f"'#FID IID' or 'IID', found {' '.join(header[:2])!r}"
                )
            columns = header[n_id:]
            if need_columns and not columns:
                raise InputError(f"{path}, line {lineno}: no data columns after the ID column(s)")
            for k, name in enumerate(columns):
                if not name:
                    raise InputError(f"{path}, line {lineno}: column {n_id + k + 1} has an empty name")
                if name.upper() in (other.upper() for other in header[: n_id + k]):
                    raise InputError(f"{path}, line {lineno}: duplicate column name {name!r}")
            continue
        fields = _split(line, tabs)
        if len(fields) != len(header):
            raise InputError(
                f"{path}, line {lineno}: {len(fields)} columns, the header has {len(header)}"
            )
        iid = fields[n_id - 1]
        if not iid:
            raise InputError(f"{path}, line {lineno}: empty IID")
        if iid in first_line:
            raise InputError(
                f"{path}, line {lineno}: duplicate IID {iid!r}, already on line {first_line[iid]}"
            )
        first_line[iid] = lineno
        iids.append(iid)
        lines.append(lineno)
        cells.append(tuple(fields[n_id:]))
    if header is None:
        raise InputError(f"{path}: empty file (no header)")
    if not iids:
        raise InputError(f"{path}: no data rows after the header")
    return _RawTable(
        path=path,
        columns=tuple(header[n_id:]),
        iids=tuple(iids),
        lines=tuple(lines),
        cells=tuple(cells),
        first_column=n_id + 1,
    )


def _is_missing_word(token: str) -> bool:
    return token.lower() in MISSING_WORDS


def _numeric_column(table: _RawTable, k: int, allow_missing: bool = True) -> np.ndarray:
    """Column k as float64; -9 / NA / nan / empty -> NaN (or an error)."""
    out = np.empty(len(table.iids), dtype=np.float64)
    for row, token in enumerate(table.column(k)):
        if _is_missing_word(token):
            value = math.nan
        else:
            try:
                value = float(token)
            except ValueError:
                raise InputError(
                    f"{table.where(row, k)}: {token!r} is not a number "
                    "(write -9, NA or leave empty for a missing value)"
                ) from None
            if math.isinf(value):
                raise InputError(f"{table.where(row, k)}: {token!r} is not finite")
            if value == MISSING_NUMBER:
                value = math.nan
        if not allow_missing and math.isnan(value):
            raise InputError(f"{table.where(row, k)}: missing value ({token!r}) is not allowed here")
        out[row] = value
    return out


def _binary_phenotype(values: np.ndarray, pheno_01: bool) -> np.ndarray | None:
    """0/1/NaN case-control coding of a column, or None if it is quantitative."""
    observed = values[~np.isnan(values)]
    if observed.size == 0:
        return None
    if pheno_01:
        if not np.isin(observed, (0.0, 1.0)).all():
            return None
        return values.copy()
    if not np.isin(observed, (0.0, 1.0, 2.0)).all():
        return None
    out = np.full_like(values, np.nan)
    out[values == 1.0] = 0.0
    out[values == 2.0] = 1.0
    return out


def _alignment(table: _RawTable, sample_ids: np.ndarray, source: str) -> np.ndarray:
    """Row index of every sample in the table; exact coverage is required."""
    row_of = {iid: row for row, iid in enumerate(table.iids)}
    samples = set(sample_ids.tolist())
    for row, iid in enumerate(table.iids):
        if iid not in samples:
            raise InputError(
                f"{table.path}, line {table.lines[row]}: IID {iid!r} is not a sample of this site "
                f"(the samples are those of {source})"
            )
    absent = [iid for iid in sample_ids.tolist() if iid not in row_of]
    if absent:
        shown = ", ".join(repr(iid) for iid in absent[:5])
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise InputError(
            f"{table.path}: no row for sample(s) {shown}{more} of {source}; every sample needs "
            "a row (write -9 or NA for a missing value)"
        )
    return np.array([row_of[iid] for iid in sample_ids.tolist()], dtype=np.int64)


def _label_column(table: _RawTable, k: int) -> np.ndarray:
    labels = table.column(k)
    for row, token in enumerate(labels):
        if _is_missing_word(token) or token == "-9":
            raise InputError(f"{table.where(row, k)}: missing label ({token!r}) is not allowed")
    return np.array(labels, dtype=np.str_)


def _survival_from(table: _RawTable, order: np.ndarray) -> SurvivalTable:
    names = [name.upper() for name in table.columns]
    for name in names:
        if name not in SURVIVAL_COLUMNS + SURVIVAL_OPTIONAL:
            raise InputError(
                f"{table.path}: unknown column {name!r}; the columns are IID TIME EVENT GROUP [STRATUM]"
            )
    for name in SURVIVAL_COLUMNS:
        if name not in names:
            raise InputError(
                f"{table.path}: column {name} is missing; the columns are IID TIME EVENT GROUP [STRATUM]"
            )
    k_time, k_event, k_group = (names.index(name) for name in SURVIVAL_COLUMNS)
    time = _numeric_column(table, k_time, allow_missing=False)
    for row in np.flatnonzero(time < 0):
        raise InputError(f"{table.where(int(row), k_time)}: negative time {table.cells[row][k_time]!r}")
    event_values = _numeric_column(table, k_event, allow_missing=False)
    for row in np.flatnonzero(~np.isin(event_values, (0.0, 1.0))):
        raise InputError(
            f"{table.where(int(row), k_event)}: EVENT must be 0 (censored) or 1 (event), "
            f"found {table.cells[row][k_event]!r}"
        )
    group = _label_column(table, k_group)
    stratum = _label_column(table, names.index("STRATUM")) if "STRATUM" in names else None
    iids = np.array(table.iids, dtype=np.str_)
    return SurvivalTable(
        iid=_frozen_array(iids[order], np.str_),
        time=_frozen_array(time[order], np.float64),
        event=_frozen_array(event_values[order], np.int8),
        group=_frozen_array(group[order], np.str_),
        stratum=None if stratum is None else _frozen_array(stratum[order], np.str_),
    )


# ---------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------

class Site:
    """One provider's validated site folder (build it with :func:`read_site`).

    Attributes
    ----------
    name : str
        The folder name.
    path : pathlib.Path
    sample_ids : str array, shape (n_samples,)
        IIDs in genotype (.fam / VCF) order, or in the order of the first table
        when the site has no genotypes.
    snps : SnpTable or None
        None when the site has no genotypes.
    genotype_file : pathlib.Path or None
    pheno_01 : bool
        Whether binary phenotypes were read with 0 = control, 1 = case.
    """

    def __init__(self, *, name, path, sample_ids, snps, genotype_file, source,
                 phenotypes, phenotype_kinds, covariates, survival, features, pheno_01):
        self.name = name
        self.path = path
        self.sample_ids = sample_ids
        self.snps = snps
        self.genotype_file = genotype_file
        self.pheno_01 = pheno_01
        self._source = source
        self._phenotypes = phenotypes
        self._phenotype_kinds = phenotype_kinds
        self._covariates = covariates
        self._survival = survival
        self._features = features

    def __repr__(self) -> str:
        parts = [f"{self.n_samples} samples"]
        if self.snps is not None:
            parts.append(f"{self.n_snps} SNPs from {self.genotype_file.name}")
        for label, present in (("phenotypes", self._phenotypes), ("covariates", self._covariates),
                               ("survival", self._survival), ("features", self._features)):
            if present:
                parts.append(label)
        return f"Site({self.name!r}: {', '.join(parts)})"

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def n_snps(self) -> int:
        """Number of SNPs (0 without genotypes)."""
        return 0 if self.snps is None else len(self.snps)

    @property
    def has_genotypes(self) -> bool:
        return self.snps is not None

    def genotype_block(self, j0: int, j1: int) -> np.ndarray:
        """ALT dosages of SNPs ``j0 .. j1 - 1`` for every sample.

        Parameters
        ----------
        j0, j1 : int
            SNP range, ``0 <= j0 <= j1 <= n_snps``.

        Returns
        -------
        int8 array, shape (n_samples, j1 - j0), C order
            0/1/2 copies of the ALT allele, -1 where the call is missing.
        """
        if self._source is None:
            raise InputError(f"site {self.name!r} ({self.path}) has no genotypes")
        j0, j1 = int(j0), int(j1)
        if not 0 <= j0 <= j1 <= self.n_snps:
            raise InputError(
                f"site {self.name!r}: SNP block [{j0}, {j1}) is outside [0, {self.n_snps})"
            )
        return self._source.read(j0, j1)

    def phenotypes(self) -> dict[str, np.ndarray]:
        """Phenotype columns of ``phenotypes.tsv`` (empty dict without the file).

        Returns
        -------
        dict str -> float64 array, shape (n_samples,)
            Aligned to :attr:`sample_ids`.  Binary columns as 0.0 control,
            1.0 case, NaN missing (see :meth:`phenotype_kinds`); quantitative
            columns as read, NaN missing.
        """
        return dict(self._phenotypes)

    def phenotype_kinds(self) -> dict[str, str]:
        """``'binary'`` or ``'quantitative'`` for every phenotype column."""
        return dict(self._phenotype_kinds)

    def covariates(self) -> dict[str, np.ndarray]:
        """Covariate columns of ``covariates.tsv`` (empty dict without the file).

        Returns
        -------
        dict str -> float64 array, shape (n_samples,)
            Aligned to :attr:`sample_ids`, NaN missing.
        """
        return dict(self._covariates)

    def survival(self) -> SurvivalTable | None:
        """Survival records of ``survival.tsv`` aligned to :attr:`sample_ids`, or None."""
        return self._survival

    def features(self) -> FeatureTable | None:
        """Clinical features of ``features.tsv`` aligned to :attr:`sample_ids`, or None."""
        return self._features


def read_site(path, *, pheno_01: bool = False) -> Site:
    """Read and validate a site folder.

    Parameters
    ----------
    path : str or os.PathLike
        The site folder.
    pheno_01 : bool
        Read binary phenotypes as 0 = control, 1 = case (PLINK 2's ``--1``)
        instead of 1 = control, 2 = case, 0 = missing.

    Returns
    -------
    Site

    Raises
    ------
    InputError
        With a message naming the file, and the line and column where there is
        one, for anything malformed (see the module docstring for the rules).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a site folder (no such directory)")
    name = folder.resolve().name

    bed, bim, fam = (folder / FILE_NAMES[key] for key in ("bed", "bim", "fam"))
    vcfs = [folder / file for file in FILE_NAMES["vcf"] if (folder / file).exists()]
    plink_present = [p for p in (bed, bim, fam) if p.exists()]
    if plink_present and vcfs:
        raise InputError(
            f"{folder}: both a PLINK fileset ({plink_present[0].name}) and a VCF ({vcfs[0].name}); "
            "submit one genotype source"
        )
    if len(vcfs) > 1:
        raise InputError(f"{folder}: both {vcfs[0].name} and {vcfs[1].name}; keep one")

    sample_ids = snps = source = genotype_file = None
    sample_source = None
    if plink_present:
        for part in (bed, bim, fam):
            if not part.exists():
                raise InputError(
                    f"{part}: missing (a PLINK fileset needs {bed.name}, {bim.name} and {fam.name})"
                )
        sample_ids = _read_fam(fam)
        snps = _read_bim(bim)
        _check_bed(bed, len(sample_ids), len(snps), fam, bim)
        source = _BedSource(bed, len(sample_ids), len(snps))
        genotype_file = bed
        sample_source = fam.name
    elif vcfs:
        genotype_file = vcfs[0]
        sample_ids, snps, header_lines = _read_vcf_header_and_snps(genotype_file)
        source = _VcfSource(genotype_file, len(sample_ids), len(snps), header_lines)
        sample_source = genotype_file.name

    raw = {}
    for key in ("phenotypes", "covariates", "features", "survival"):
        file = folder / FILE_NAMES[key]
        if file.exists():
            raw[key] = _read_raw_table(file)
    if sample_ids is None:
        if not raw:
            known = ", ".join(
                name for value in FILE_NAMES.values()
                for name in (value if isinstance(value, tuple) else (value,))
            )
            raise InputError(f"{folder}: none of the site files is present ({known})")
        first = next(iter(raw))
        sample_ids = _frozen_array(raw[first].iids, np.str_)
        sample_source = raw[first].path.name

    phenotypes, kinds = {}, {}
    if "phenotypes" in raw:
        table = raw["phenotypes"]
        order = _alignment(table, sample_ids, sample_source)
        for k, column in enumerate(table.columns):
            values = _numeric_column(table, k)
            binary = _binary_phenotype(values, pheno_01)
            kinds[column] = "quantitative" if binary is None else "binary"
            phenotypes[column] = _frozen_array((values if binary is None else binary)[order], np.float64)

    covariates = {}
    if "covariates" in raw:
        table = raw["covariates"]
        order = _alignment(table, sample_ids, sample_source)
        for k, column in enumerate(table.columns):
            covariates[column] = _frozen_array(_numeric_column(table, k)[order], np.float64)

    features = None
    if "features" in raw:
        table = raw["features"]
        order = _alignment(table, sample_ids, sample_source)
        values = np.column_stack([_numeric_column(table, k) for k in range(len(table.columns))])
        features = FeatureTable(
            iid=sample_ids,
            names=tuple(table.columns),
            values=_frozen_array(values[order], np.float64),
        )

    survival = None
    if "survival" in raw:
        table = raw["survival"]
        survival = _survival_from(table, _alignment(table, sample_ids, sample_source))

    return Site(
        name=name,
        path=folder,
        sample_ids=sample_ids,
        snps=snps,
        genotype_file=genotype_file,
        source=source,
        phenotypes=phenotypes,
        phenotype_kinds=kinds,
        covariates=covariates,
        survival=survival,
        features=features,
        pheno_01=pheno_01,
    )

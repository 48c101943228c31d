"""Reading and validating site folders (parties.sites).

Genotype dosages are checked against PLINK 2's own reading of the same files
(``--export A``, ``--vcf ... --make-bed``); every malformed input must raise an
InputError that names the file (and the line and column where there is one).
"""
import gzip
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bed_reader import to_bed

from mpc.errors import InputError
from parties.sites import (
    SnpTable,
    check_snps_agree,
    encode_genotypes,
    read_site,
)

SHARED = Path("/work/shared/data/secure-gwas-1k")
SHARED_SIZES = {"site1": 400, "site2": 350, "site3": 250}


def plink2(*args, cwd):
    """Run plink2 and return its completed process; fail (not skip) without it."""
    exe = shutil.which("plink2")
    if exe is None:
        pytest.fail("plink2 is not on PATH (CI installs it: apt-get install plink2)")
    result = subprocess.run([exe, "--threads", "1", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"plink2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def read_export_a(path: Path, snps: SnpTable) -> tuple[list[str], np.ndarray]:
    """IIDs and ALT dosages (-1 missing) from a plink2 ``--export A`` .raw file.

    plink2 names the counted allele in each column header (``ID_ALLELE``); it
    may be REF or ALT depending on the version, so convert to ALT counts.
    """
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    iids = [row[1] for row in rows]
    values = np.array([[np.nan if v == "NA" else float(v) for v in row[6:]] for row in rows])
    counted = [name.rsplit("_", 1)[1] for name in header[6:]]
    assert len(counted) == len(snps)
    for j, allele in enumerate(counted):
        assert allele in (snps.ref[j], snps.alt[j])
        if allele == snps.ref[j]:
            values[:, j] = 2 - values[:, j]
    dosage = np.where(np.isnan(values), -1, values).astype(np.int8)
    return iids, dosage


def write_bed(folder: Path, dosage: np.ndarray, iids, snps: SnpTable) -> None:
    """A PLINK fileset with ALT = A1 (column 5), REF = A2 (column 6)."""
    folder.mkdir(parents=True, exist_ok=True)
    to_bed(
        folder / "genotypes.bed",
        np.where(dosage < 0, -127, dosage).astype(np.int8),
        properties={
            "fid": list(iids), "iid": list(iids),
            "chromosome": snps.chrom, "sid": snps.id, "bp_position": snps.pos,
            "allele_1": snps.alt, "allele_2": snps.ref,
        },
    )


VCF_HEADER = (
    "##fileformat=VCFv4.2\n"
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"
)


def write_vcf(path: Path, samples, records) -> None:
    """records: (chrom, pos, id, ref, alt, [GT strings])."""
    lines = [VCF_HEADER + "\t" + "\t".join(samples)]
    for chrom, pos, vid, ref, alt, calls in records:
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t.\t.\t.\tGT\t" + "\t".join(calls))
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")


@pytest.fixture
def site1_copy(tmp_path):
    """A writable copy of shared site1 with valid survival.tsv and features.tsv added."""
    folder = tmp_path / "site1"
    shutil.copytree(SHARED / "site1", folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    iids = [line.split()[1] for line in (folder / "genotypes.fam").read_text().splitlines()]
    survival = ["IID\tTIME\tEVENT\tGROUP\tSTRATUM"]
    survival += [f"{iid}\t{10 + i}\t{i % 2}\t{'AB'[i % 3 == 0]}\t{'xy'[i % 2]}" for i, iid in enumerate(iids)]
    (folder / "survival.tsv").write_text("\n".join(survival) + "\n")
    features = ["IID\tF1\tF2"] + [f"{iid}\t{i * 0.5}\t{-i}" for i, iid in enumerate(iids)]
    (folder / "features.tsv").write_text("\n".join(features) + "\n")
    return folder


def edit_line(path: Path, lineno: int, edit) -> None:
    """Replace line `lineno` (1-based) of a text file by edit(line)."""
    lines = path.read_text().split("\n")
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_text("\n".join(lines))


def set_field(path: Path, lineno: int, column: int, value: str) -> None:
    """Set a white-space separated field (1-based column), re-joined with tabs."""
    def edit(line):
        fields = line.split()
        fields[column - 1] = value
        return "\t".join(fields)
    edit_line(path, lineno, edit)


# ---------------------------------------------------------------------------
# The shared secure-gwas-1k sites
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SHARED_SIZES))
def test_shared_site_shapes_and_tables(name):
    site = read_site(SHARED / name)
    assert site.name == name
    assert site.n_samples == SHARED_SIZES[name] and len(site.sample_ids) == SHARED_SIZES[name]
    assert site.n_snps == 1000 and len(site.snps) == 1000
    assert site.snps.id[0] == "snp1" and site.snps.chrom[0] == "22"
    assert site.snps.alt[0] == "A" and site.snps.ref[0] == "G"  # .bim columns 5 and 6
    assert site.phenotype_kinds() == {"CASE": "binary"}
    case = site.phenotypes()["CASE"]
    raw = [line.split()[2] for line in (SHARED / name / "phenotypes.tsv").read_text().splitlines()[1:]]
    assert case.dtype == np.float64 and case.shape == (site.n_samples,)
    np.testing.assert_array_equal(case, [{"1": 0.0, "2": 1.0}[v] for v in raw])
    covariates = site.covariates()
    assert list(covariates) == [f"C{k}" for k in range(1, 11)]
    assert all(v.shape == (site.n_samples,) and set(np.unique(v)) <= {0.0, 1.0} for v in covariates.values())
    assert site.survival() is None and site.features() is None
    block = site.genotype_block(0, site.n_snps)
    assert block.dtype == np.int8 and block.shape == (site.n_samples, 1000)
    assert set(np.unique(block)) <= {0, 1, 2}  # the README: no missing values


def test_shared_sites_agree_on_snps():
    tables = {name: read_site(SHARED / name).snps for name in sorted(SHARED_SIZES)}
    fingerprint = check_snps_agree(tables)
    assert fingerprint == tables["site1"].fingerprint() and len(fingerprint) == 64


@pytest.mark.parametrize("name", sorted(SHARED_SIZES))
def test_dosage_matches_plink2_export(name, tmp_path):
    site = read_site(SHARED / name)
    plink2("--bfile", str(SHARED / name / "genotypes"), "--export", "A", "--out", "x", cwd=tmp_path)
    iids, dosage = read_export_a(tmp_path / "x.raw", site.snps)
    assert iids == site.sample_ids.tolist()
    np.testing.assert_array_equal(site.genotype_block(0, site.n_snps), dosage)
    # Blocks are slices of the same matrix.
    np.testing.assert_array_equal(site.genotype_block(100, 357), dosage[:, 100:357])
    assert site.genotype_block(5, 5).shape == (site.n_samples, 0)


def test_dosage_with_missing_matches_plink2_freq_and_export(tmp_path):
    rng = np.random.default_rng(3)
    n, m = 61, 40  # n not a multiple of 4: the last byte of every SNP is partial
    dosage = rng.integers(0, 3, size=(n, m)).astype(np.int8)
    dosage[rng.random((n, m)) < 0.1] = -1
    snps = SnpTable(
        chrom=["3"] * m, pos=np.arange(1, m + 1) * 1000, id=[f"v{j}" for j in range(m)],
        ref=rng.choice(list("AC"), m), alt=rng.choice(list("GT"), m),
    )
    iids = [f"p{i}" for i in range(n)]
    write_bed(tmp_path / "site", dosage, iids, snps)
    site = read_site(tmp_path / "site")
    assert site.snps.first_mismatch(snps) is None
    np.testing.assert_array_equal(site.genotype_block(0, m), dosage)
    plink2("--bfile", "site/genotypes", "--export", "A", "--out", "x", cwd=tmp_path)
    _, exported = read_export_a(tmp_path / "x.raw", snps)
    np.testing.assert_array_equal(exported, dosage)
    plink2("--bfile", "site/genotypes", "--freq", "counts", "--out", "f", cwd=tmp_path)
    rows = [line.split("\t") for line in (tmp_path / "f.acount").read_text().splitlines()[1:]]
    encoded = encode_genotypes(dosage)
    np.testing.assert_array_equal([int(r[4]) for r in rows], encoded.dosage.sum(axis=0))  # ALT_CTS
    np.testing.assert_array_equal([int(r[5]) for r in rows], 2 * (n - encoded.missing.sum(axis=0)))
    assert [r[3] for r in rows] == snps.alt.tolist()


# ---------------------------------------------------------------------------
# VCF
# ---------------------------------------------------------------------------

def test_vcf_round_trip_against_bed(tmp_path):
    samples = ["a", "b", "c", "d", "e", "f"]
    records = [
        ("chr1", 100, "rs1", "A", "G", ["0/0", "0/1", "1/1", "./.", "0|1", "1|0"]),
        # half-calls are missing; haploid calls count as homozygous
        ("chr1", 200, "rs2", "C", "T", ["0/.", "./1", ".", "0", "1", "1/1"]),
        ("chr2", 50, ".", "G", "A", ["1/1", "1/1", "0/0", "0/1", "0/1", "0/0"]),
        ("chr2", 70, "rs4", "T", "C", ["0/0"] * 6),
    ]
    expected = np.array([
        [0, 1, 2, -1, 1, 1],
        [-1, -1, -1, 0, 2, 2],
        [2, 2, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
    ], dtype=np.int8).T
    write_vcf_folder = tmp_path / "vcf"
    write_vcf_folder.mkdir()
    write_vcf(write_vcf_folder / "genotypes.vcf.gz", samples, records)
    vcf_site = read_site(write_vcf_folder)
    assert vcf_site.genotype_file.name == "genotypes.vcf.gz"
    assert vcf_site.sample_ids.tolist() == samples
    assert vcf_site.snps.chrom.tolist() == ["1", "1", "2", "2"]  # "chr" removed
    assert vcf_site.snps.id.tolist() == ["rs1", "rs2", ".", "rs4"]
    assert vcf_site.snps.ref.tolist() == ["A", "C", "G", "T"]
    assert vcf_site.snps.alt.tolist() == ["G", "T", "A", "C"]
    np.testing.assert_array_equal(vcf_site.genotype_block(0, 4), expected)

    write_bed(tmp_path / "bed", expected, samples, vcf_site.snps)
    bed_site = read_site(tmp_path / "bed")
    assert bed_site.snps.first_mismatch(vcf_site.snps) is None
    assert bed_site.snps.fingerprint() == vcf_site.snps.fingerprint()
    np.testing.assert_array_equal(bed_site.genotype_block(0, 4), vcf_site.genotype_block(0, 4))
    # The VCF reader keeps a cursor: forward, backward and empty blocks.
    for j0, j1 in [(2, 4), (0, 1), (1, 3), (3, 4), (3, 3), (0, 4)]:
        np.testing.assert_array_equal(vcf_site.genotype_block(j0, j1), expected[:, j0:j1])


def test_vcf_matches_plink2_conversion(tmp_path):
    rng = np.random.default_rng(11)
    n, m = 37, 60
    dosage = rng.integers(0, 3, size=(n, m))
    dosage[rng.random((n, m)) < 0.05] = -1
    calls = {0: "0/0", 1: "0/1", 2: "1/1", -1: "./."}
    samples = [f"id{i}" for i in range(n)]
    records = [
        ("chr5", 1000 + 37 * j, f"rs{j}", "ACGT"[j % 4], "ACGT"[(j + 1) % 4], [calls[g] for g in dosage[:, j]])
        for j in range(m)
    ]
    (tmp_path / "vcf").mkdir()
    write_vcf(tmp_path / "vcf" / "genotypes.vcf.gz", samples, records)
    (tmp_path / "bed").mkdir()
    plink2("--vcf", "vcf/genotypes.vcf.gz", "--make-bed", "--out", "bed/genotypes", cwd=tmp_path)
    vcf_site, bed_site = read_site(tmp_path / "vcf"), read_site(tmp_path / "bed")
    assert vcf_site.sample_ids.tolist() == bed_site.sample_ids.tolist() == samples
    assert check_snps_agree({"vcf": vcf_site.snps, "bed": bed_site.snps})
    np.testing.assert_array_equal(vcf_site.genotype_block(0, m), dosage)
    np.testing.assert_array_equal(bed_site.genotype_block(0, m), dosage)


def test_vcf_multi_allelic_is_rejected(tmp_path):
    records = [
        ("1", 10, "ok", "A", "G", ["0/0", "0/1"]),
        ("1", 20, "multi", "A", "G,T", ["0/1", "1/2"]),
    ]
    write_vcf(tmp_path / "genotypes.vcf.gz", ["x", "y"], records)
    with pytest.raises(InputError, match=r"genotypes\.vcf\.gz, line 5 \(1:20 multi\): multi-allelic"):
        read_site(tmp_path)


# ---------------------------------------------------------------------------
# Bad input: every case names the file (and the line / column)
# ---------------------------------------------------------------------------

def _bed_bytes(folder, edit):
    path = folder / "genotypes.bed"
    path.write_bytes(edit(path.read_bytes()))


def _delete_line(path, lineno):
    lines = path.read_text().split("\n")
    del lines[lineno - 1]
    path.write_text("\n".join(lines))


BAD_INPUTS = {
    "bed magic": (lambda f: _bed_bytes(f, lambda b: b"\x00\x00" + b[2:]),
                  [r"genotypes\.bed", "not a PLINK 1 .bed", "6c 1b"]),
    "bed individual-major": (lambda f: _bed_bytes(f, lambda b: b[:2] + b"\x00" + b[3:]),
                             [r"genotypes\.bed", "not SNP-major"]),
    "bed truncated": (lambda f: _bed_bytes(f, lambda b: b[:-7]),
                      [r"genotypes\.bed", "truncated", "99996 bytes, expected 100003"]),
    "bed too long": (lambda f: _bed_bytes(f, lambda b: b + b"\x00"),
                     [r"genotypes\.bed", "too long"]),
    "bed empty": (lambda f: _bed_bytes(f, lambda b: b""), [r"genotypes\.bed", "empty file"]),
    "fam extra sample": (lambda f: (f / "genotypes.fam").open("a").write("X1 X1 0 0 0 -9\n"),
                         [r"genotypes\.bed", "truncated", r"401 samples in genotypes\.fam"]),
    "fam columns": (lambda f: edit_line(f / "genotypes.fam", 3, lambda s: s + " extra"),
                    [r"genotypes\.fam, line 3", "expected 6 columns", "found 7"]),
    "fam duplicate": (lambda f: set_field(f / "genotypes.fam", 9, 2, "S2"),
                      [r"genotypes\.fam, line 9", "duplicate sample ID", "'S2'", "line 2"]),
    "bim columns": (lambda f: edit_line(f / "genotypes.bim", 5, lambda s: s.rsplit("\t", 1)[0]),
                    [r"genotypes\.bim, line 5", "expected 6 columns", "found 5"]),
    "bim position": (lambda f: set_field(f / "genotypes.bim", 7, 4, "14433x"),
                     [r"genotypes\.bim, line 7, column 4 \(POS\)", "'14433x' is not an integer"]),
    "bim missing": (lambda f: (f / "genotypes.bim").unlink(), [r"genotypes\.bim: missing"]),
    "vcf and bed": (lambda f: write_vcf(f / "genotypes.vcf.gz", ["S1"], []),
                    ["both a PLINK fileset", r"genotypes\.vcf\.gz"]),
    "pheno unknown IID": (lambda f: set_field(f / "phenotypes.tsv", 4, 2, "nobody"),
                          [r"phenotypes\.tsv, line 4", "IID 'nobody' is not a sample", r"genotypes\.fam"]),
    "pheno missing sample": (lambda f: _delete_line(f / "phenotypes.tsv", 10),
                             [r"phenotypes\.tsv", "no row for sample", "'S9'"]),
    "pheno duplicate": (lambda f: set_field(f / "phenotypes.tsv", 6, 2, "S1"),
                        [r"phenotypes\.tsv, line 6", "duplicate IID 'S1'", "line 2"]),
    "pheno not a number": (lambda f: set_field(f / "phenotypes.tsv", 6, 3, "case"),
                           [r"phenotypes\.tsv, line 6, column 3 \(CASE\)", "'case' is not a number"]),
    "pheno infinite": (lambda f: set_field(f / "phenotypes.tsv", 6, 3, "inf"),
                       [r"phenotypes\.tsv, line 6, column 3 \(CASE\)", "not finite"]),
    "pheno row length": (lambda f: edit_line(f / "phenotypes.tsv", 8, lambda s: s + "\t1"),
                         [r"phenotypes\.tsv, line 8", "4 columns, the header has 3"]),
    "pheno header": (lambda f: edit_line(f / "phenotypes.tsv", 1, lambda s: "ID\tX\tCASE"),
                     [r"phenotypes\.tsv, line 1", "header must start with"]),
    "pheno duplicate column": (lambda f: edit_line(f / "phenotypes.tsv", 1, lambda s: "FID\tIID\tIID"),
                               [r"phenotypes\.tsv, line 1", "duplicate column name 'IID'"]),
    "covariate not a number": (lambda f: set_field(f / "covariates.tsv", 12, 6, "yes"),
                               [r"covariates\.tsv, line 12, column 6 \(C4\)", "'yes' is not a number"]),
    "covariate extra IID": (lambda f: (f / "covariates.tsv").open("a").write("Z9\tZ9" + "\t0" * 10 + "\n"),
                            [r"covariates\.tsv, line 402", "IID 'Z9' is not a sample"]),
    "survival negative time": (lambda f: set_field(f / "survival.tsv", 3, 2, "-4"),
                               [r"survival\.tsv, line 3, column 2 \(TIME\)", "negative time"]),
    "survival missing time": (lambda f: set_field(f / "survival.tsv", 3, 2, "NA"),
                              [r"survival\.tsv, line 3, column 2 \(TIME\)", "missing value"]),
    "survival event 2": (lambda f: set_field(f / "survival.tsv", 4, 3, "2"),
                         [r"survival\.tsv, line 4, column 3 \(EVENT\)", "0 \\(censored\\) or 1"]),
    "survival missing group": (lambda f: set_field(f / "survival.tsv", 5, 4, "NA"),
                               [r"survival\.tsv, line 5, column 4 \(GROUP\)", "missing label"]),
    "survival no TIME column": (lambda f: edit_line(f / "survival.tsv", 1, lambda s: s.replace("TIME", "T")),
                                [r"survival\.tsv", "unknown column 'T'"]),
    "survival unknown IID": (lambda f: set_field(f / "survival.tsv", 2, 1, "S9999"),
                             [r"survival\.tsv, line 2", "IID 'S9999' is not a sample"]),
    "features not a number": (lambda f: set_field(f / "features.tsv", 7, 3, "1,5"),
                              [r"features\.tsv, line 7, column 3 \(F2\)", "'1,5' is not a number"]),
    "features empty": (lambda f: (f / "features.tsv").write_text(""), [r"features\.tsv: empty file"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_line_and_column(case, site1_copy):
    mutate, patterns = BAD_INPUTS[case]
    read_site(site1_copy)  # valid before the edit
    mutate(site1_copy)
    with pytest.raises(InputError) as info:
        read_site(site1_copy)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


def test_not_a_site(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        read_site(tmp_path / "absent")
    with pytest.raises(InputError, match="none of the site files"):
        read_site(tmp_path)


def test_genotype_block_range_and_absence(site1_copy, tmp_path):
    site = read_site(site1_copy)
    for j0, j1 in [(-1, 3), (5, 4), (0, 1001)]:
        with pytest.raises(InputError, match="outside"):
            site.genotype_block(j0, j1)
    (tmp_path / "tables").mkdir()
    shutil.copy(site1_copy / "phenotypes.tsv", tmp_path / "tables")
    with pytest.raises(InputError, match="has no genotypes"):
        read_site(tmp_path / "tables").genotype_block(0, 1)


# ---------------------------------------------------------------------------
# Tables: coding, missing values, alignment
# ---------------------------------------------------------------------------

PHENO_TABLE = (
    "#FID\tIID\tB12\tB01\tQT\tCOUNT\n"
    "f\tc\t2\t1\t0.5\t0\n"
    "f\ta\t1\t0\t-9\t1\n"
    "f\tb\t0\tNA\t\t2\n"
    "f\td\t-9\t1\tnan\t3\n"
)


def test_phenotype_coding_and_missing_values(tmp_path):
    (tmp_path / "phenotypes.tsv").write_text(PHENO_TABLE)
    site = read_site(tmp_path)  # no genotypes: samples in table order
    assert site.sample_ids.tolist() == ["c", "a", "b", "d"]
    assert site.snps is None and site.n_snps == 0
    assert site.phenotype_kinds() == {
        "B12": "binary", "B01": "binary", "QT": "quantitative", "COUNT": "quantitative",
    }
    p = site.phenotypes()
    nan = np.nan
    np.testing.assert_array_equal(p["B12"], [1.0, 0.0, nan, nan])  # 2 case, 1 control, 0 / -9 missing
    np.testing.assert_array_equal(p["B01"], [0.0, nan, nan, 0.0])  # default: 0 means missing
    np.testing.assert_array_equal(p["QT"], [0.5, nan, nan, nan])  # -9, empty and nan are missing
    np.testing.assert_array_equal(p["COUNT"], [0.0, 1.0, 2.0, 3.0])

    site01 = read_site(tmp_path, pheno_01=True)
    assert site01.phenotype_kinds()["B01"] == "binary"
    assert site01.phenotype_kinds()["B12"] == "quantitative"  # 2 is not a 0/1 code
    np.testing.assert_array_equal(site01.phenotypes()["B01"], [1.0, 0.0, nan, 1.0])
    np.testing.assert_array_equal(site01.phenotypes()["B12"], [2.0, 1.0, 0.0, nan])


def test_tables_are_aligned_to_genotype_order(tmp_path):
    rng = np.random.default_rng(5)
    iids = ["u1", "u2", "u3", "u4", "u5"]
    snps = SnpTable(chrom=["1"] * 3, pos=[1, 2, 3], id=["a", "b", "c"], ref=["A"] * 3, alt=["G"] * 3)
    write_bed(tmp_path, rng.integers(0, 3, size=(5, 3)).astype(np.int8), iids, snps)
    order = [3, 0, 4, 2, 1]
    # space separated, 'IID' header, shuffled rows
    (tmp_path / "phenotypes.tsv").write_text(
        "IID Y\n" + "".join(f"{iids[i]} {i + 0.25}\n" for i in order))
    (tmp_path / "covariates.tsv").write_text(
        "FID IID AGE SEX\n" + "".join(f"F {iids[i]} {40 + i} {i % 2}\n" for i in order))
    (tmp_path / "features.tsv").write_text(
        "IID\tX1\tX2\n" + "".join(f"{iids[i]}\t{i}\t{-i}\n" for i in order))
    (tmp_path / "survival.tsv").write_text(
        "#IID\tGROUP\tTIME\tEVENT\n" + "".join(f"{iids[i]}\t{'AB'[i % 2]}\t{i * 1.5}\t{i % 2}\n" for i in order))
    site = read_site(tmp_path)
    assert site.sample_ids.tolist() == iids
    np.testing.assert_array_equal(site.phenotypes()["Y"], np.arange(5) + 0.25)
    assert site.phenotype_kinds()["Y"] == "quantitative"
    np.testing.assert_array_equal(site.covariates()["AGE"], 40 + np.arange(5))
    np.testing.assert_array_equal(site.covariates()["SEX"], np.arange(5) % 2)
    features = site.features()
    assert features.names == ("X1", "X2") and features.iid.tolist() == iids
    np.testing.assert_array_equal(features.values, np.column_stack([np.arange(5), -np.arange(5)]))
    survival = site.survival()
    assert survival.iid.tolist() == iids
    np.testing.assert_array_equal(survival.time, np.arange(5) * 1.5)
    assert survival.event.dtype == np.int8 and survival.event.tolist() == [0, 1, 0, 1, 0]
    assert survival.group.tolist() == ["A", "B", "A", "B", "A"]
    assert survival.stratum is None


def test_survival_only_site(tmp_path):
    (tmp_path / "survival.tsv").write_text(
        "IID TIME EVENT GROUP STRATUM\nq 3 1 A s1\nr 0 0 B s2\n")
    site = read_site(tmp_path)
    assert site.sample_ids.tolist() == ["q", "r"]
    assert site.phenotypes() == {} and site.covariates() == {}
    survival = site.survival()
    assert survival.time.tolist() == [3.0, 0.0] and survival.stratum.tolist() == ["s1", "s2"]


# ---------------------------------------------------------------------------
# Encoding and SNP agreement
# ---------------------------------------------------------------------------

def test_encode_genotypes():
    block = np.array([[0, 1, 2, -1], [-1, 2, 1, 0]], dtype=np.int8)
    dosage, missing, het = encode_genotypes(block)
    assert dosage.dtype == missing.dtype == het.dtype == np.uint8
    np.testing.assert_array_equal(dosage, [[0, 1, 2, 0], [0, 2, 1, 0]])
    np.testing.assert_array_equal(missing, [[0, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(het, [[0, 1, 0, 0], [0, 0, 1, 0]])
    with pytest.raises(InputError, match="-127"):
        encode_genotypes(np.array([[0, -127]], dtype=np.int8))
    with pytest.raises(InputError, match="int8"):
        encode_genotypes(np.array([[0, 1]], dtype=np.int64))


def _table(n=10, **changes):
    fields = {
        "chrom": ["1"] * n, "pos": np.arange(n) * 100 + 5, "id": [f"rs{j}" for j in range(n)],
        "ref": ["A"] * n, "alt": ["G"] * n,
    }
    for name, (j, value) in changes.items():
        fields[name] = list(fields[name])
        fields[name][j] = value
    return SnpTable(**fields)


def test_snp_table_fingerprint_and_mismatch():
    a = _table()
    assert len(a) == 10 and a.first_mismatch(_table()) is None
    assert a.fingerprint() == _table().fingerprint()
    with pytest.raises(ValueError):
        a.pos[0] = 7  # read-only
    for change in ({"alt": (7, "T")}, {"pos": (7, 706)}, {"id": (7, "rs77")}, {"chrom": (7, "2")}):
        b = _table(**change)
        assert a.fingerprint() != b.fingerprint()
        (field,) = change
        message = a.first_mismatch(b)
        assert "SNP index 7" in message and "rs7" in message and field in message
    message = a.first_mismatch(_table(n=9))
    assert "SNP counts differ: 10 (this) vs 9 (other)" in message and "first 9 SNPs agree" in message


def test_check_snps_agree_names_both_sites():
    good = _table()
    assert check_snps_agree({"x": good, "y": _table(), "z": _table()}) == good.fingerprint()
    with pytest.raises(InputError) as info:
        check_snps_agree({"hospital_a": good, "hospital_b": _table(), "hospital_c": _table(ref=(4, "C"))})
    message = str(info.value)
    assert "'hospital_a' and 'hospital_c'" in message
    assert "SNP index 4" in message and "rs4" in message and "ref 'A' (hospital_a) vs 'C' (hospital_c)" in message
    with pytest.raises(InputError, match=r"'a' and 'b'.*pos 105 \(a\) vs 106 \(b\)"):
        check_snps_agree({"a": good, "b": _table(pos=(1, 106))})
    with pytest.raises(InputError, match="SNP counts differ"):
        check_snps_agree({"a": good, "b": _table(n=12)})

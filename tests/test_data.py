"""Data sets and generators: the LIBSVM reader, shipped data, FedProx Synthetic, quadratics."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from fedtheory.data import (
    Dataset,
    fedprox_synthetic,
    heterogeneous_quadratic,
    load_a9a,
    load_breast_cancer,
    load_diabetes,
    load_phishing,
    read_libsvm,
)
from fedtheory.errors import FedTheoryError
from fedtheory.partitions import validate_partition


def _write_libsvm(path, X, labels, *, compress=False):
    X = sp.csr_matrix(X)
    lines = []
    for i, label in enumerate(labels):
        row = X.getrow(i)
        feats = " ".join(
            f"{j + 1}:{float(v)!r}" for j, v in zip(row.indices, row.data, strict=True)
        )
        lines.append(f"{label} {feats}\n")
    text = "".join(lines).encode()
    path.write_bytes(gzip.compress(text) if compress else text)


# ---------------------------------------------------------------------------------------------
# read_libsvm


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("label_set", [("-1", "+1"), ("0", "1")])
@pytest.mark.parametrize("intercept", [False, True])
def test_libsvm_round_trip(tmp_path, compress, label_set, intercept):
    rng = np.random.default_rng(0)
    X = sp.random(40, 9, density=0.3, random_state=rng, format="csr") * 10 - 5 * (
        sp.random(40, 9, density=0.3, random_state=rng, format="csr") > 0
    )
    X = sp.csr_matrix(X)
    X.eliminate_zeros()
    y = rng.choice([-1.0, 1.0], 40)
    labels = [label_set[int(v > 0)] for v in y]
    path = tmp_path / ("rt.svm.gz" if compress else "rt.svm")
    _write_libsvm(path, X, labels, compress=compress)

    data = read_libsvm(path, intercept=intercept, n_features=9)
    assert sp.issparse(data.X) and data.X.format == "csr" and data.X.dtype == np.float64
    expected = X.toarray()
    if intercept:
        expected = np.hstack([expected, np.ones((40, 1))])
    np.testing.assert_array_equal(data.X.toarray(), expected)
    np.testing.assert_array_equal(data.y, y)
    assert (data.n, data.d, data.task) == (40, 9 + intercept, "classification")


def test_libsvm_skips_comments_and_blank_lines_and_takes_rows(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# header\n\n+1 2:0.5 # trailing\n  \n-1 1:1e-3 3:2\n1\n")
    data = read_libsvm(path)
    np.testing.assert_array_equal(data.X.toarray(), [[0, 0.5, 0], [1e-3, 0, 2], [0, 0, 0]])
    np.testing.assert_array_equal(data.y, [1, -1, 1])
    assert read_libsvm(path, rows=2).n == 2
    assert read_libsvm(path, n_features=5).d == 5


def test_libsvm_regression_targets_are_kept(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("2.5 1:1\n-0.25 2:1\n7 1:3\n")
    data = read_libsvm(path, task="regression")
    np.testing.assert_array_equal(data.y, [2.5, -0.25, 7.0])
    assert data.task == "regression"


def test_libsvm_reader_agrees_with_sklearn_on_a9a():
    from importlib import resources

    from sklearn.datasets import load_svmlight_file

    with resources.as_file(resources.files("fedtheory") / "datasets" / "a9a.txt.gz") as path:
        X_ref, y_ref = load_svmlight_file(str(path), n_features=123)
    data = load_a9a(rows=None)
    assert (data.X != X_ref).nnz == 0
    np.testing.assert_array_equal(data.y, y_ref)


# (issue 11 item 14) files written by scikit-learn's dump_svmlight_file (0-based by default)


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    # without digits' all-zero first column, so that index 0 occurs in a 0-based dump (a
    # 0-based file without any index 0 cannot be told from a 1-based one)
    return X[:300, 1:].astype(np.float64), y[:300].astype(np.float64)


@pytest.mark.parametrize("zero_based", [True, False])
def test_libsvm_reads_sklearn_dump_of_digits_exactly(tmp_path, zero_based):
    from sklearn.datasets import dump_svmlight_file

    X, y = _digits()
    path = tmp_path / "digits.svm"
    dump_svmlight_file(X, y, str(path), zero_based=zero_based)
    # columns may be all zero at the end, so d is fixed to keep them
    data = read_libsvm(path, task="regression", zero_based=zero_based, n_features=X.shape[1])
    np.testing.assert_array_equal(data.X.toarray(), X)
    np.testing.assert_array_equal(data.y, y)
    binary = np.where(y >= 5, 1.0, -1.0)
    dump_svmlight_file(X, binary, str(path), zero_based=zero_based)
    data = read_libsvm(path, zero_based=zero_based)
    assert data.d <= X.shape[1] and not X[:, data.d :].any()  # d = the last non-zero column
    np.testing.assert_array_equal(data.X.toarray(), X[:, : data.d])
    np.testing.assert_array_equal(data.y, binary)


def test_libsvm_zero_based_default_d_is_the_largest_index_plus_one(tmp_path):
    path = tmp_path / "z.svm"
    path.write_text("+1 0:1 4:2\n-1 2:3\n")
    data = read_libsvm(path, zero_based=True)
    assert data.d == 5
    np.testing.assert_array_equal(data.X.toarray(), [[1, 0, 0, 0, 2], [0, 0, 3, 0, 0]])
    with pytest.raises(FedTheoryError, match=r"line 1: feature index 4 exceeds n_features=4"):
        read_libsvm(path, zero_based=True, n_features=4)
    path.write_text("+1 -1:1\n")
    with pytest.raises(FedTheoryError, match=r"feature index -1 must be >= 0"):
        read_libsvm(path, zero_based=True)


def test_a_zero_based_file_read_as_one_based_says_to_set_zero_based(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    X, y = _digits()
    path = tmp_path / "digits.svm"
    dump_svmlight_file(X, y, str(path))  # scikit-learn's default: 0-based
    with pytest.raises(
        FedTheoryError,
        match=r"digits.svm, line \d+: feature index 0: .*"
        r"dump_svmlight_file.*set zero_based = true",
    ):
        read_libsvm(path, task="regression")


def _spec(tmp_path, kind, data_extra=""):
    spec = tmp_path / "p.toml"
    spec.write_text(
        f'name = "digits"\n[data]\nsource = "libsvm"\npath = "digits.svm"\n'
        f'{data_extra}[partition]\nkind = "iid"\nclients = 3\nseed = 0\n'
        f'[objective]\nkind = "{kind}"\nlam = 1e-2\n'
    )
    return spec


def test_a_spec_reads_sklearn_digits_for_ridge_without_a_task_key(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    from fedtheory.suite import build_problem, read_spec

    X, y = _digits()
    dump_svmlight_file(X, y, str(tmp_path / "digits.svm"), zero_based=True)
    problem = build_problem(read_spec(_spec(tmp_path, "ridge", "zero_based = true\n")))
    assert problem.objective == "ridge" and problem.n == 300 and problem.d == 63
    assert problem.spec["data"].get("task") is None  # nothing added to the user's spec
    ys = np.sort(np.concatenate([problem.y[i, : problem.sizes[i]] for i in range(3)]))
    np.testing.assert_array_equal(ys, np.sort(y))  # the real targets 0..9, kept
    assert problem.reference.grad_norm <= 1e-10
    with pytest.raises(FedTheoryError, match=r"zero_based = true"):
        build_problem(read_spec(_spec(tmp_path, "ridge")))
    with pytest.raises(FedTheoryError, match=r"\[data\] zero_based must be true or false"):
        read_spec(_spec(tmp_path, "ridge", 'zero_based = "yes"\n'))


def test_a_logistic_spec_on_real_targets_names_the_task_key(tmp_path):
    from sklearn.datasets import dump_svmlight_file

    from fedtheory.suite import build_problem, read_spec

    X, y = _digits()
    dump_svmlight_file(X, y + 0.5, str(tmp_path / "digits.svm"), zero_based=True)
    with pytest.raises(FedTheoryError, match=r'class label .* task = "regression"'):
        build_problem(read_spec(_spec(tmp_path, "logistic", "zero_based = true\n")))


GOOD = "# comment\n+1 1:1 3:2\n\n-1 2:0.5\n"  # data lines are 2 and 4; the bad line is line 5


@pytest.mark.parametrize(
    "bad_line, pattern",
    [
        ("2 1:1", "class label '2'"),
        ("abc 1:1", "class label 'abc'"),
        ("0 1:1", "labels -1 and 0 both occur"),
        ("+1 0:1", "feature index 0: LIBSVM indices start at 1.*set zero_based = true"),
        ("+1 -2:1", "feature index -2 must be >= 1"),
        ("+1 3:1 2:1", "strictly increasing, got 3 then 2"),
        ("+1 2:1 2:1", "strictly increasing, got 2 then 2"),
        ("+1 1:nan", "not finite"),
        ("+1 1:inf", "not finite"),
        ("+1 1:abc", "feature value 'abc' is not a valid number"),
        ("+1 1.5:1", "feature index '1.5' is not a valid"),
        ("+1 1:1 7", "'7' is not of the form idx:val"),
        ("+1 1:", "'1:' is not of the form idx:val"),
        ("+1 1:1 5:1", "feature index 5 exceeds n_features=4"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_libsvm_names_file_and_line(tmp_path, bad_line, pattern, compress):
    path = tmp_path / ("bad.txt.gz" if compress else "bad.txt")
    text = (GOOD + bad_line + "\n-1 1:1\n").encode()
    path.write_bytes(gzip.compress(text) if compress else text)
    with pytest.raises(FedTheoryError, match=pattern) as info:
        read_libsvm(path, n_features=4)
    message = str(info.value)
    assert str(path) in message and "line 5:" in message
    assert "\n" not in message


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"+1 1:1\n-1 2:1\n+1 1:1 # caf\xe9\n")
    with pytest.raises(FedTheoryError, match="not valid UTF-8") as info:
        read_libsvm(path)
    assert str(path) in str(info.value) and "line 3:" in str(info.value)


@pytest.mark.parametrize(
    "content, kwargs, pattern",
    [
        ("", {}, "no data rows"),
        ("# only a comment\n\n", {}, "no data rows"),
        ("+1 1:1\n-1 1:2\n", {"rows": 3}, "rows=3 asked for but the file has only 2"),
        ("+1 1:1\n", {"task": "ranking"}, "task must be one of"),
        ("nan 1:1\n", {"task": "regression"}, "line 1: regression target 'nan'"),
    ],
)
def test_libsvm_refuses_empty_short_or_mislabelled_files(tmp_path, content, kwargs, pattern):
    path = tmp_path / "f.txt"
    path.write_text(content)
    with pytest.raises(FedTheoryError, match=pattern):
        read_libsvm(path, **kwargs)


def test_libsvm_refuses_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(FedTheoryError, match="no such file"):
        read_libsvm(tmp_path / "missing.txt")
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"+1 1:1\n" * 100)[:30])
    with pytest.raises(FedTheoryError, match="broken.gz"):
        read_libsvm(path)


# ---------------------------------------------------------------------------------------------
# Shipped and bundled data


def test_a9a_is_the_fednl_benchmark():
    """Its parse time is a benchmark (benchmarks/), never a wall-clock assertion here."""
    full = load_a9a(rows=None)
    assert full.X.shape == (32561, 123)
    data = load_a9a()
    assert data.X.shape == (32560, 123) and data.name == "a9a"
    assert set(np.unique(data.y)) == {-1.0, 1.0}
    np.testing.assert_array_equal(data.X.data, 1.0)
    assert load_a9a(rows=100, intercept=True).X.shape == (100, 124)


def test_phishing_has_68_features_and_pm1_labels():
    data = load_phishing()
    assert data.X.shape == (8619, 68)
    assert set(np.unique(data.y)) == {-1.0, 1.0}


def test_breast_cancer_is_standardised_with_pm1_labels():
    data = load_breast_cancer(intercept=True)
    assert data.X.shape == (569, 31) and data.task == "classification"
    np.testing.assert_allclose(data.X[:, :-1].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.X[:, :-1].std(axis=0), 1)
    np.testing.assert_array_equal(data.X[:, -1], 1)
    assert np.sum(data.y == 1) == 357  # benign
    assert load_breast_cancer(standardize=False).X.max() > 100


def test_diabetes_target_is_centred_with_unit_std():
    data = load_diabetes()
    assert data.X.shape == (442, 10) and data.task == "regression"
    assert abs(data.y.mean()) < 1e-12 and abs(data.y.std() - 1) < 1e-12
    np.testing.assert_allclose(data.X.std(axis=0), 1)


def test_dataset_refuses_inconsistent_fields():
    with pytest.raises(FedTheoryError, match="task must be one of"):
        Dataset(X=np.zeros((2, 1)), y=np.zeros(2), name="x", task="ranking")
    with pytest.raises(FedTheoryError, match="must be -1 or \\+1"):
        Dataset(X=np.zeros((2, 1)), y=np.array([0.0, 1.0]), name="x", task="classification")
    with pytest.raises(FedTheoryError, match=r"y must have shape \(2,\)"):
        Dataset(X=np.zeros((2, 1)), y=np.zeros(3), name="x", task="regression")


# ---------------------------------------------------------------------------------------------
# Generators


def test_fedprox_synthetic_is_deterministic_and_partitioned():
    a, parts_a = fedprox_synthetic(0.5, 0.5, 12, seed=3)
    b, parts_b = fedprox_synthetic(0.5, 0.5, 12, seed=3)
    c, _ = fedprox_synthetic(0.5, 0.5, 12, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert all(np.array_equal(p, q) for p, q in zip(parts_a, parts_b, strict=True))
    assert a.X.shape != c.X.shape or not np.array_equal(a.X, c.X)
    validate_partition(parts_a, a.n)
    assert a.d == 60 and a.task == "classification"
    assert set(np.unique(a.y)) <= {-1.0, 1.0}
    assert min(p.size for p in parts_a) >= 10


def test_fedprox_synthetic_sizes_equal_and_explicit():
    data, parts = fedprox_synthetic(0, 0, 4, d=5, sizes="equal", mean_size=30, seed=0)
    assert [p.size for p in parts] == [30] * 4 and data.X.shape == (120, 5)
    data, parts = fedprox_synthetic(0, 0, 3, sizes=[5, 7, 9], seed=0)
    assert [p.size for p in parts] == [5, 7, 9]
    with pytest.raises(FedTheoryError, match="sizes must list 3 positive ints"):
        fedprox_synthetic(0, 0, 3, sizes=[5, 7], seed=0)
    with pytest.raises(FedTheoryError, match="'powerlaw', 'equal'"):
        fedprox_synthetic(0, 0, 3, sizes="zipf", seed=0)


def test_fedprox_alpha_beta_one_spreads_clients_more_than_zero():
    def client_spread(ab, seed):
        data, parts = fedprox_synthetic(ab, ab, 30, sizes="equal", seed=seed)
        return np.std([data.X[p].mean() for p in parts])

    for seed in range(3):
        assert client_spread(1.0, seed) > 3 * client_spread(0.0, seed)


@pytest.mark.parametrize("n_per_client", [12, [8, 20, 9]])
def test_quadratic_client_hessians_have_spectrum_in_mu_L_with_both_ends(n_per_client):
    mu, L, d = 0.05, 20.0, 8
    data, parts = heterogeneous_quadratic(3, d, n_per_client=n_per_client, mu=mu, L=L, seed=1)
    validate_partition(parts, data.n)
    assert data.task == "regression"
    for part in parts:
        A = data.X[part]
        eig = np.linalg.eigvalsh(A.T @ A / part.size)
        assert eig.min() >= mu * (1 - 1e-10) and eig.max() <= L * (1 + 1e-10)
        assert abs(eig.min() - mu) <= 1e-10 * mu and abs(eig.max() - L) <= 1e-10 * L


def test_quadratic_local_least_squares_recovers_local_optima():
    data, parts = heterogeneous_quadratic(4, 6, n_per_client=10, spread=0.0, seed=2)
    optima = []
    for part in parts:
        theta, *_ = np.linalg.lstsq(data.X[part], data.y[part], rcond=None)
        np.testing.assert_allclose(data.X[part] @ theta, data.y[part], atol=1e-10)
        optima.append(theta)
    # spread = 0: every client's local optimum is the common centre theta_c
    np.testing.assert_allclose(optima, np.broadcast_to(optima[0], (4, 6)), atol=1e-10)

    data, parts = heterogeneous_quadratic(4, 6, n_per_client=10, spread=1.0, seed=2)
    optima = [np.linalg.lstsq(data.X[p], data.y[p], rcond=None)[0] for p in parts]
    assert np.linalg.norm(optima[0] - optima[1]) > 0.1


def test_quadratic_noise_moves_targets_off_the_range():
    data, parts = heterogeneous_quadratic(2, 3, n_per_client=20, noise=0.1, seed=0)
    A, y = data.X[parts[0]], data.y[parts[0]]
    theta, *_ = np.linalg.lstsq(A, y, rcond=None)
    assert np.linalg.norm(A @ theta - y) > 1e-3


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(n_per_client=4), r"n_i >= d=5 rows, got \[4, 4\]"),
        (dict(n_per_client=[6, 3]), r"got \[6, 3\]"),
        (dict(n_per_client=[6, 6, 6]), "n_per_client must be an int or 2 ints"),
        (dict(mu=0.0), "need 0 < mu <= L, got mu=0.0"),
        (dict(mu=2.0, L=1.0), "mu=2.0, L=1.0"),
    ],
)
def test_quadratic_refuses_bad_sizes_and_spectra(kwargs, pattern):
    with pytest.raises(FedTheoryError, match=pattern):
        heterogeneous_quadratic(2, 5, seed=0, **kwargs)

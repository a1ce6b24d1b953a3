"""Shared fixtures: a private cache directory, MNIST-1D / digits data and a trained MNIST-1D guide."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("NAS_THESEUS_PROGRESS", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` skip, with their reason, where no CUDA GPU is at hand."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _the_same_start_for_every_test(monkeypatch):
    """Every test starts as if alone, whichever ran before it: torch's global generator seeded, the session's
    torch thread count (a study run sets its own, see ``runner.set_threads``; a guide trained under another count
    differs in its last bits), and no worker name (which seeds samplers) or reserved cores from the environment."""
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    monkeypatch.delenv("NAS_THESEUS_WORKER", raising=False)
    monkeypatch.setenv("NAS_THESEUS_LATENCY_CORES", "")  # restored to unset after the test: a study that times
    monkeypatch.delenv("NAS_THESEUS_LATENCY_CORES")  # latency aside writes it (utils/cores.py)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Every test session trains guides into its own cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("NAS_THESEUS_CACHE")
    os.environ["NAS_THESEUS_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NAS_THESEUS_CACHE", None)
    else:
        os.environ["NAS_THESEUS_CACHE"] = old


@pytest.fixture(scope="session")
def mnist1d():
    from nas_theseus.data import load_mnist1d

    return load_mnist1d()


@pytest.fixture(scope="session")
def digits():
    from nas_theseus.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def mnist1d_guide(mnist1d, _cache_dir):
    from nas_theseus.guides import builtin_guide

    return builtin_guide("mnist1d_cnn", mnist1d, progress=False)


@pytest.fixture(scope="session")
def postgres():
    """One throw-away PostgreSQL server per test session (see tests/pgserver.py). Skipped where the server
    binaries are missing, unless NAS_THESEUS_REQUIRE_POSTGRES=1 (set by .ci/run, which installs them)."""
    from pgserver import PostgresServer

    try:
        server = PostgresServer()
    except FileNotFoundError as e:
        if os.environ.get("NAS_THESEUS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL tests need the server binaries: {e}; `bash .ci/system-deps` installs them")
    server.start()
    server.wait_ready()
    yield server
    server.close()


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """`datasets` imported, HF offline mode in the environment, its caches in tmp_path, and no network at all."""
    import socket

    datasets = pytest.importorskip("datasets", reason="needs pip install 'nas-theseus[datasets]'")
    import huggingface_hub.constants

    # `datasets` reads these when first imported, so they alone do not make it offline: our loaders force it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))

    attempts = []
    connect = socket.socket.connect

    def no_network(*args, **kwargs):  # recorded too: `datasets` swallows some network errors
        if isinstance(args[0], socket.socket) and args[0].family == socket.AF_UNIX:  # DataLoader workers' pipes
            return connect(*args, **kwargs)
        attempts.append(args)
        raise OSError("Hugging Face data tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    yield datasets
    assert not attempts, f"Hugging Face data tried the network: {attempts}"

"""What we use of Optuna beyond its public API, pinned: the day a release (CI installs the newest that
pyproject.toml admits) changes one of these, this test fails instead of the retries or the one-line failure
reports silently doing nothing."""

from __future__ import annotations

import inspect
import logging

import optuna
import pytest

from nas_theseus.study import storage

# RDBStorage methods whose arguments our storage wrapper reads (not only passes through)
PRIVATE_SIGNATURES = {
    "_get_stale_trial_ids": ["self", "study_id"],
    "set_trial_state_values": ["self", "trial_id", "state", "values"],
}


@pytest.mark.parametrize("name, params", PRIVATE_SIGNATURES.items())
def test_the_rdbstorage_methods_we_read_the_arguments_of_keep_their_signatures(name, params):
    assert list(inspect.signature(getattr(optuna.storages.RDBStorage, name)).parameters) == params


def test_every_rdbstorage_method_we_retry_exists():
    storage.check_wrapped_methods()  # raises ImportError naming the missing ones
    assert all(hasattr(optuna.storages.RDBStorage, name) for name in storage._RETRIED)


def test_optuna_still_reports_a_failed_trial_as_our_log_filter_reads_it(caplog):
    """The runner drops Optuna's traceback for failures it reports itself, matching "Trial N failed" from the
    logger optuna.study._optimize."""
    study = optuna.create_study()

    def fail(trial):
        raise RuntimeError("boom")

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna.study._optimize"):
            study.optimize(fail, n_trials=1, catch=(RuntimeError,))
    finally:
        optuna.logging.disable_propagation()
    assert any(r.name == "optuna.study._optimize" and r.getMessage().startswith("Trial 0 failed")
               for r in caplog.records), [(r.name, r.getMessage()) for r in caplog.records]


def test_optimize_still_asks_through_the_study_instance():
    """The runner records which worker runs which trial by replacing ``study.ask`` on the instance
    (``owners.wrap_ask``): that only works while ``Study.optimize`` asks through ``self.ask``."""
    study = optuna.create_study()
    asked = []
    ask = study.ask

    def recording_ask(*args, **kwargs):
        trial = ask(*args, **kwargs)
        asked.append(trial.number)
        return trial

    study.ask = recording_ask
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert asked == [0, 1]

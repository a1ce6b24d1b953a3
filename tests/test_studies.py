"""Every shipped study file runs end to end (tiny budgets through --set), so none of them rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_local_data import write_fake_cifar10

from nas_theseus.cli import main

STUDIES = Path(__file__).resolve().parent.parent / "studies"
TINY = ["study.n_trials=2", "study.startup_trials=1", "convert.steps_per_stage=4", "convert.probe_size=64",
        "convert.finetune.max_epochs=1", "guide.fit.max_epochs=2"]


LM_TINY = ["data.options.max_bytes=30000", "data.options.context=16", "guide.options.n_embd=16",
           "guide.options.n_layer=2", "convert.batch_size=8", "convert.finetune.batch_size=64", "latency.repeats=3",
           'objectives.latency_ms="minimize"']


@pytest.mark.slow
@pytest.mark.parametrize("study", ["mnist1d_cnn_to_mlp.toml", "mnist1d_cnn_to_mlp_partitions.toml",
                                   "mnist1d_deploy.toml", "digits_vit_to_mlp.toml", "cifar10_resnet18_to_mlp.toml",
                                   "pydoc_gpt2_to_rnn.toml",
                                   "imagefolder_cnn_to_mlp.toml"])
def test_shipped_study_runs(study, tmp_path, capsys):
    args = ["run", str(STUDIES / study), "--workdir", str(tmp_path / "wd"), "--no-progress"]
    for s in TINY:
        args += ["--set", s]
    if study.startswith("cifar10"):  # a small fake CIFAR-10 in the real format, on the CPU
        root = write_fake_cifar10(tmp_path / "cifar-10-batches-py", per_batch=24)
        # the CIFAR ResNet-18 (stride-1 stem) is slow to train on a CPU, and an MLP on its layer1 (64 x 32 x 32
        # features) is huge: random weights, and the trials' candidates chosen small
        small = ('{"layer1.block" = "keep", "layer2.block" = "mlp", "layer2.width" = 256, "layer2.depth" = 1, '
                 '"layer3.block" = "keep", "layer4.block" = "mlp", "layer4.width" = 256, "layer4.depth" = 1, '
                 '"order.0" = %d, "order.1" = 0, "order.2" = 0}')
        args += ["--set", f'data.options.root="{root}"', "--device", "cpu", "--set", "convert.batch_size=32",
                 "--set", 'guide.weights="random"', "--set", f"study.enqueue=[{small % 0}, {small % 3}]"]
    if study.startswith("pydoc"):  # a 2-block GPT-2, 16 wide, on 30 KB of text
        for s in LM_TINY:
            args += ["--set", s]
    if study.startswith("imagefolder"):  # a small folder of PNGs, read lazily
        from test_image_folder import write_folder

        root = write_folder(tmp_path / "images", n=20, size=(16, 16))
        args += ["--set", f'data.options.root="{root}"', "--set", "data.options.size=16", "--set",
                 "data.options.in_memory=false", "--set", "convert.batch_size=16", "--device", "cpu"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["pareto", str(tmp_path / "wd"), "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(row["flops"] > 0 for row in front)
    if study.startswith("pydoc"):  # perplexity objective, per-token decoding cost beside the full sequence
        assert all(1 < row["perplexity"] < 256 and row["test_perplexity"] > 1 for row in front)
        metrics = json.loads((tmp_path / "wd" / "trials" / str(front[0]["trial"]) / "metrics.json").read_text())
        assert metrics["flops"] == metrics["flops_decode"]["per_token"] < metrics["flops_full_sequence"]
        assert metrics["latency"]["per_token_ms"] == metrics["latency_ms"] > 0
        assert "median_ms" in metrics["latency_full_sequence"]

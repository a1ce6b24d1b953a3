"""The small-budget sections that the tests' study files share: guide, data, conversion and fine-tuning."""


def tiny_training(steps_per_stage: int) -> str:
    """TOML for a 5-epoch guide on 600 MNIST-1D samples, a conversion of a few steps per stage (at most
    ``steps_per_stage``: stages stop on held-out alignment) and 2-epoch fine-tuning / baselines."""
    return f"""
[guide]
source = "builtin:mnist1d_cnn"
fit = {{ max_epochs = 5 }}

[data]
name = "mnist1d"
options = {{ num_samples = 600 }}

[convert]
steps_per_stage = {steps_per_stage}
batch_size = 64
probe_size = 128
refit_every = 4

[convert.finetune]
max_epochs = 2
patience = 2

[baseline]
fit = {{ max_epochs = 2, patience = 2 }}
"""

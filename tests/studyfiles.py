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


SHIPPED = ["mnist1d_deploy.toml",  # the README's first command's study first
           "mnist1d_cnn_to_mlp.toml", "mnist1d_cnn_to_mlp_partitions.toml", "mnist1d_deep_deploy.toml",
           "digits_vit_to_mlp.toml",
           "cifar10_resnet18_to_mlp.toml", "pydoc_gpt2_to_rnn.toml", "imagefolder_cnn_to_mlp.toml"]
TINY = ["study.n_trials=2", "study.startup_trials=1", "convert.steps_per_stage=4", "convert.probe_size=64",
        "convert.finetune.max_epochs=1", "guide.fit.max_epochs=2"]
LM_TINY = ["data.options.max_bytes=30000", "data.options.context=16", "guide.options.n_embd=16",
           "guide.options.n_layer=2", "convert.batch_size=8", "convert.finetune.batch_size=64", "latency.repeats=3",
           'objectives.latency_ms="minimize"']


def small_settings(study: str, tmp_path) -> list[str]:
    """``--set`` overrides that make a shipped study small enough for a test on the CPU (its data made under
    ``tmp_path``, once, where the study reads files)."""
    settings = list(TINY)
    if study.startswith("mnist1d_deep"):  # its block library: 66 blocks, each a few steps
        settings += ["library.steps=2", "guide.options.channels=8"]
    if study.startswith("cifar10"):  # a small fake CIFAR-10 in the real format, on the CPU
        from test_local_data import write_fake_cifar10

        root = tmp_path / "cifar-10-batches-py"
        if not root.exists():  # made once per test
            write_fake_cifar10(root, per_batch=24)
        # the CIFAR ResNet-18 (stride-1 stem) is slow to train on a CPU, and an MLP on its layer1 (64 x 32 x 32
        # features) is huge: random weights, and the trials' candidates chosen small
        small = ('{"layer1.block" = "keep", "layer2.block" = "mlp", "layer2.width" = 256, "layer2.depth" = 1, '
                 '"layer3.block" = "keep", "layer4.block" = "mlp", "layer4.width" = 256, "layer4.depth" = 1, '
                 '"order.0" = %d, "order.1" = 0, "order.2" = 0}')
        settings += [f'data.options.root="{root}"', 'study.device="cpu"', "convert.batch_size=32",
                     'guide.weights="random"', f"study.enqueue=[{small % 0}, {small % 3}]"]
    if study.startswith("pydoc"):  # a 2-block GPT-2, 16 wide, on 30 KB of text
        settings += LM_TINY
    if study.startswith("imagefolder"):  # a small folder of PNGs, read lazily
        from test_image_folder import write_folder

        root = tmp_path / "images"
        if not root.exists():
            write_folder(root, n=20, size=(16, 16))
        settings += [f'data.options.root="{root}"', "data.options.size=16", "data.options.in_memory=false",
                     "convert.batch_size=16", 'study.device="cpu"']
    return settings

"""The prepared GPU check: every step's figures in one try on a lent GPU (not a test).

    bash benchmarks/gpu_check.sh          # on a machine with a CUDA GPU (the device tool's lent H200)
    bash benchmarks/gpu_check.sh --dry    # every step on the CPU with tiny sizes (tests/test_gpu_check.py)

gpu_check.sh installs the carried wheels and runs this package (``python benchmarks/gpu_check [--dry]``). Its
harness (harness.py) runs the preflight, then one step per process, each under its own time limit, in the order
of the registry (steps/__init__.py; value per second first):

  tests    the CUDA tests (tests/test_cuda.py), a one-trial study on CUDA among them
  readme   the README's first command's study end to end on CUDA, as a new user runs it (empty guide cache):
           wall time, where each trial's time went, the front; beside this repo's record of the same command on
           a 2-core CPU (benchmarks/results/readme_study_cpu.json, benchmarks/readme_study.py)
  cka      CKA numerics on ResNet-18 activations: fp64 vs fp32 vs TF32 vs bf16, and our loss under a global
           TF32 setting and a bf16 autocast (it must read as fp32)
  stage    one alignment stage: engine ÷ a bare loop at the same precision (TF32, bf16), and engine ÷ the best
           bare loop (bf16, fused AdamW, torch.compile; compile time apart)
  e2e      a ResNet-18 -> 4 MLP conversion at fixed steps, fp32 (TF32 off) and bf16
  workers  1, 2 and 4 concurrent workers on the GPU, each running the same stage: aggregate samples/s, peak
           memory each
  memory   GPU memory after each of 6 conversions in one process (partitions and device spellings varied)
  study    a 3-trial synthetic-ResNet study on CUDA beside one trial of it on the CPU (per-trial time ratio)
  stream   the guide on the fly: a CIFAR-sized folder of PNGs read through a DataLoader with workers, standard
           augmentation, ResNet-18 layer1 -> MLP(256): images/s, GPU utilisation, stage ÷ a bare loop doing the
           same work, and the stage with the guide in channels_last ÷ without
  ddp      one conversion across 1 and 2 GPUs under torchrun (ResNet-18 layer1 -> MLP(256), the guide
           streamed, the same global batch): alignment samples/s each, and their ratio; skipped with one GPU

Each step writes its record into OUT/gpu_check.json as soon as it ends (OUT: $OUT, else
benchmarks/results/gpu_check), so a step that runs out of time costs only its own figures; the log is
OUT/gpu_check.log and the table of every step, printed last, OUT/gpu_check.md (records.py). With ``--dry``
nothing needs a GPU: the same code runs on the CPU with tiny sizes (sizes.py; compile with the ``eager``
backend) and no time limits, so the check cannot rot between GPU sessions.

One step alone: ``python benchmarks/gpu_check STEP [--dry]`` (one_step.py); the steps share their synthetic
data and guide (workload.py) and memory figures (measure.py).
"""

"""Where a run executes: this machine, one node of a multi-node job, or a Slurm job chain.

The plan and its stages never change with the scheduler. A scheduler only decides which node runs
what (``nodes``) and how stages are submitted (``slurm``); a Kubernetes (Volcano / PyTorchJob)
renderer would sit beside ``slurm`` and reuse ``nodes`` and ``navila_tune.run_stage``.
"""

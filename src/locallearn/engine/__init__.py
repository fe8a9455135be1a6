"""The training loop, runs, checkpoints and resume."""

from locallearn.engine.loop import batches, evaluate, train_epoch, train_step
from locallearn.engine.run import Run, resume_run

__all__ = ["Run", "batches", "evaluate", "resume_run", "train_epoch", "train_step"]

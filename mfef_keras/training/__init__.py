"""Training runs: configs, run directories, checkpoints and resume, evaluation and method studies."""

"""Training the teacher and student networks (``csakd train``).

- :mod:`~csakd.train.config`: the typed training configuration and the recipes.
- :mod:`~csakd.train.recipe`: :func:`~csakd.train.recipe.build_run`, a run built from the command's options.
- :mod:`~csakd.train.plan`: the run's spec, learning-rate schedule, time-bounded plan and sample stream.
- :mod:`~csakd.train.setup`: the process-wide state a run needs (seeds, determinism, process group).
- :mod:`~csakd.train.trainer`: :class:`~csakd.train.trainer.Trainer`, the training loop.
- :mod:`~csakd.train.distributed`: data-parallel training over several processes (``torchrun``).
- :mod:`~csakd.train.report`: what a run reports when it ends.

Nothing is imported here, so that importing one module (e.g. the torch-free ``report``) stays cheap.
"""
